"""Shipped spatial change models (ONNX + JSON sidecar per band set), written by the train_unet DVC stage."""
