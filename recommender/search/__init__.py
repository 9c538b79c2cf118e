"""Finding neighbours: FAISS indexes, ranking of a batch of queries, and hybrid fusion. The engine
and the evaluation share these, so what is measured is what is served."""
