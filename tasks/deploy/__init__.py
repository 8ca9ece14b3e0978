"""Deployment on the training side: exported (ONNX) models evaluated with the tasks' own evaluation loop."""
