"""Query and catalog vectors: the thumbnail autoencoder and its embedding, the title model
(PyTorch, or ONNX Runtime for single queries), and the title head that joins them."""
