"""What `detect` and `identify` need at run time: image reading, alignment, model sessions, preprocessing,
decoding, the model loader. It imports nothing from training (detection/, recognition/, prepare/, train/);
training imports it to evaluate and export."""
