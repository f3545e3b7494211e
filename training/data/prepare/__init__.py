"""`dlaunch prepare`: tokenize a corpus once into a streamed token-shard dataset.

A prepared dataset at a local path or an s3:// prefix:

    tokenizer/<files>           the tokenizer the shards were made with (tokenizer.json, ...)
    shards/<NNNNN>.bin, .idx    megatron-core indexed datasets: one sequence per document
                                (causal LM: its tokens then EOS; classification: one example)
    shards/<NNNNN>.labels.npy   classification only: each example's label, as a shard-local index
    progress.json               the shards committed so far (sha256 of each file), rewritten
                                atomically after each one; lets a killed prepare continue
    manifest.json               written LAST: sources with sizes, tokenizer hash, documents,
                                tokens, shards with checksums, label map

The commit discipline is the checkpoints' (`training.checkpoint.commit`): a dataset exists for
readers only once `manifest.json` exists, and a committed dataset is never written again.
Modules: `config` (the data spec), `sources` (streaming documents out of files), `plan` (work
units), `shards` (tokenize one unit into one shard), `run` (the Ray Data job and the commit),
`reader` (`PreparedDataset`, with the node-local shard cache of `cache`).
"""
