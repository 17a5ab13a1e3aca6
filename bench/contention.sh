#!/bin/bash
# Training speed of the tiny preset under OpenMP wait policies and thread counts, on a quiet CPU and beside a
# competing load (a second training of the same config, looping), as issue #23 asks. One measured process at a time;
# figures from bench/train_speed.py (s/kimg, steady state). Run on an otherwise idle machine:
#   bash bench/contention.sh
cd "$(dirname "$0")/.."
P=${PYTHON:-python}
run() { # label, env...
  local label=$1; shift
  env "$@" "$P" bench/train_speed.py --cfg=tiny --iterations=12 --warmup=3 2>/dev/null | grep baseline | sed "s/^/$label /"
}
for load in quiet loaded; do
  if [ $load = loaded ]; then
    ( while true; do OMP_WAIT_POLICY= "$P" bench/train_speed.py --cfg=tiny --iterations=400 --warmup=0 >/dev/null 2>&1; done ) &
    LOADPID=$!
    sleep 20
  fi
  for _rep in 1 2; do
    run "$load active-2thr " OMP_WAIT_POLICY=ACTIVE
    run "$load default-2thr" OMP_WAIT_POLICY=
    run "$load passive-2thr" OMP_WAIT_POLICY=PASSIVE
    run "$load 1thr        " OMP_NUM_THREADS=1
  done
  if [ $load = loaded ]; then kill $LOADPID 2>/dev/null; pkill -f "iterations=400"; fi
done
