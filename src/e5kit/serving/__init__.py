"""Serving: long-document chunking, a FAISS vector index with a document store, the ONNX backend,
dynamic batching, and an OpenAI-compatible REST server."""
