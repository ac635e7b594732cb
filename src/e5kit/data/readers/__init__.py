"""One reader per raw source; each streams records and never loads a whole dump into memory."""
