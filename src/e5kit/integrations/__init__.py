"""Role-aware embeddings for LangChain and LlamaIndex.

An E5 model embeds queries and documents with different prefixes ("query: ", "passage: "). LangChain's
``OpenAIEmbeddings`` and LlamaIndex's ``OpenAIEmbedding`` send both through the same request without
a role, so an e5kit server embeds the documents as queries. The classes here send the query role for
query calls and the document role for document calls, to an e5kit server or a local ``Encoder``:

    >>> from e5kit.integrations.langchain import E5kitEmbeddings        # pip install 'e5kit[langchain]'
    >>> embeddings = E5kitEmbeddings(base_url="http://127.0.0.1:8000")  # doctest: +SKIP
    >>> from e5kit.integrations.llamaindex import E5kitEmbedding        # pip install 'e5kit[llamaindex]'
    >>> embed_model = E5kitEmbedding(encoder="path/to/model")           # doctest: +SKIP

Neither framework is imported by ``import e5kit``, nor by this package: only by its module for it.
"""
