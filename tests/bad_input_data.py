"""Bad-input rows for the data tools (dataset_tool.py, lt_dataset.py, label files), kept apart from
tests/test_bad_input.py's CASES so that they can grow on their own; docs/bad-input.md lists both.

Each row: (script, arguments, expected message excerpt); tests/test_trust_data.py runs them. Every {name} is
an input that test makes (see BUILDERS there): a copy of a 60-image digits dataset with one defect, or {out},
a folder that must stay empty.
"""

DATA_CASES = [
    # Damaged or odd ZIPs: refused naming the ZIP and the member, never a silent substitute or a traceback.
    ("dataset_tool.py", "--source={zip_with_duplicate_member} --dest={out}/o.zip",
     "ZIP {zip_with_duplicate_member} holds two members named 00000/img00000003.png"),
    ("dataset_tool.py", "--source={zip_with_crc_error} --dest={out}/o.zip",
     "cannot read {zip_with_crc_error}:00000/img00000005.png: Bad CRC-32"),
    ("lt_dataset.py", "--source={zip_with_damaged_dataset_json} --imf=2",
     "cannot read {zip_with_damaged_dataset_json}:dataset.json: Bad CRC-32 for file 'dataset.json'; the ZIP is damaged"),
    ("dataset_tool.py", "--source={zip_with_encrypted_member} --dest={out}/o.zip",
     "{zip_with_encrypted_member}:00000/img00000002.png is encrypted"),
    ("dataset_tool.py", "--source={zip_with_unknown_compression} --dest={out}/o.zip",
     "{zip_with_unknown_compression}:00000/img00000002.png uses ZIP compression method 99"),
    ("dataset_tool.py", "--verify={zip_with_duplicate_member}",
     "ZIP {zip_with_duplicate_member} holds two members named 00000/img00000003.png"),
    ("lt_dataset.py", "--source={zip_with_duplicate_member} --imf=2",
     "ZIP {zip_with_duplicate_member} holds two members named 00000/img00000003.png"),
    # Labels: one validator for dataset.json, --subset/--label-file files and what dataset_tool.py writes.
    ("dataset_tool.py", "--source={labels_nan} --dest={out}/o.zip",
     "labels in {labels_nan}/dataset.json must be finite numbers within float32 range; image "
     "00000/img00000000.png has [nan, 1.0]"),
    ("dataset_tool.py", "--source={labels_beyond_float32} --dest={out}/o.zip",
     "image 00000/img00000000.png has [1e+39, 1.0]"),
    ("dataset_tool.py", "--source={labels_id_2_63} --dest={out}/o.zip",
     "found ids 9223372036854775808 and none for 9. Renumber them: add --remap-labels to this command"),
    ("dataset_tool.py", "--source={labels_nested} --dest={out}/o.zip",
     "image 00000/img00000000.png has the nested list [[0]]. Write a class id as a plain integer (3, not [[3]])"),
    ("dataset_tool.py", "--source={labels_one_element_lists} --dest={out}/o.zip",
     "are one-element lists of integers (image 00000/img00000000.png has [0]): write class ids as plain integers"),
    ("dataset_tool.py", "--source={labels_stray_id} --dest={out}/o.zip",
     "must be 0..C-1 for its C=10 classes; found ids 15 and none for 9. Renumber them: add --remap-labels"),
    ("dataset_tool.py", "--source={labels_empty_vector} --dest={out}/o.zip",
     "image 00000/img00000000.png has an empty list"),
    ("dataset_tool.py", "--source={labels_class_names_not_a_list} --dest={out}/o.zip",
     '"class_names" in {labels_class_names_not_a_list}/dataset.json must be a list of class names'),
    ("dataset_tool.py", "--source={labels_deeply_nested_json} --dest={out}/o.zip",
     "{labels_deeply_nested_json}/dataset.json is not a label file: its JSON is nested too deeply to read"),
    ("dataset_tool.py", "--source={labels_binary_file} --dest={out}/o.zip",
     "{labels_binary_file}/dataset.json is not valid JSON"),
    ("lt_dataset.py", "--source={labels_stray_id} --imf=2",
     "found ids 15 and none for 9. Renumber them: python dataset_tool.py --source={labels_stray_id} "
     "--dest=<new.zip> --remap-labels"),
    ("lt_dataset.py", "--source={labels_id_2_63} --imf=2", "found ids 9223372036854775808 and none for 9"),
    ("lt_dataset.py", "--source={labels_nan} --imf=2", "image 00000/img00000000.png has [nan, 1.0]"),
    ("lt_dataset.py", "--source={labels_deeply_nested_json} --imf=2", "its JSON is nested too deeply to read"),
    ("lt_dataset.py", "--source={digits} --imf=2 --label-file={subset_stray_ids}",
     "class ids in {subset_stray_ids} must be 0..C-1 for its C=10 classes; found ids 15 and none for 9. Renumber "
     "them to 0..C-1 in {subset_stray_ids}"),
    ("lt_dataset.py", "--source={digits} --imf=2 --label-file={subset_float_vectors}",
     "{subset_float_vectors} has float-vector labels (e.g. [0.5, 1.0] for 00000/img00000000.png); lt_dataset.py "
     "needs integer class ids"),
    ("train.py", "--data={digits} --outdir={out} --cond=1 --subset={subset_stray_ids}",
     "found ids 15 and none for 9. Renumber them to 0..C-1 in {subset_stray_ids}"),
    # Other sources: a CIFAR pickle cannot run code; damaged headers and files get messages.
    ("dataset_tool.py", "--source={cifar_pickle_running_code} --dest={out}/o.zip",
     "{cifar_pickle_running_code}/data_batch_1 is not a CIFAR-10 batch: it names posix.system"),
    ("dataset_tool.py", "--source={cifar_string_labels} --dest={out}/o.zip",
     '{cifar_string_labels}/data_batch_1: "labels" must be a list of integer class ids'),
    ("dataset_tool.py", "--source={cifar_label_names_not_a_list} --dest={out}/o.zip",
     '{cifar_label_names_not_a_list}/batches.meta: "label_names" must be a list of class names'),
    ("dataset_tool.py", "--source={cifar_negative_label} --dest={out}/o.zip",
     "labels in {cifar_negative_label} must be non-negative class ids; image {cifar_negative_label}/img00000001 "
     "has -1"),
    ("dataset_tool.py", "--source={idx_header_of_2_93_pixels} --dest={out}/o.zip",
     "holds 0 data bytes but its header [2147483648, 2147483648, 2147483648] needs"),
    ("dataset_tool.py", "--source={idx_images_of_size_0} --dest={out}/o.zip", "with H, W >= 1, got uint8 [1, 0, 0, 1]"),
    ("dataset_tool.py", "--source={folder_with_text_as_png} --dest={out}/o.zip",
     "cannot read image {folder_with_text_as_png}/b.png: not an image in a format Pillow can read"),
    ("dataset_tool.py", "--source={folder_with_dangling_link} --dest={out}/o.zip",
     "cannot read {folder_with_dangling_link}/b.png: No such file or directory; remove or replace the file"),
    # Destinations and options.
    ("dataset_tool.py", "--source={digits} --dest=", "--dest is empty"),
    ("dataset_tool.py", "--source={digits} --dest={a_file}/o.zip", "cannot write --dest {a_file}/o.zip"),
    ("dataset_tool.py", "--source={digits} --dest={folder_named_zip} --overwrite",
     "--dest {folder_named_zip} is a folder, but a .zip destination is written as a ZIP file"),
    ("lt_dataset.py", "--source={digits} --imf=inf", "inf is not a finite number"),
    ("lt_dataset.py", "--source={digits} --imf=2 --seed=-1", "-1 is not in the range x>=0"),
    ("lt_dataset.py", "--source={dataset_with_damaged_commit_record} --imf=2",
     "cannot be read (damaged, or not written by lt_dataset.py)"),
]
