"""Serving: long-document chunking, a FAISS vector index with a document store,
dynamic batching, and an OpenAI-compatible REST server."""
