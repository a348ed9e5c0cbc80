"""hklflow's one codec layer: everything about bitshuffle-LZ4 chunks and raw chunks.

* framing.py: the chunk's layout (12-byte header, blocks), bitshuffle's default block
  size, the checks that refuse a damaged chunk (a FileFormatError naming file and chunk,
  never a read past its end);
* library.py: the baseline codec, the bitshuffle package's public functions;
* compiled.py: the optional fast path (compiled loops over bitshuffle's C functions, our
  own bit-untranspose, block-by-block decoding inside other kernels); loaded by
  choice.py alone, on first use, after a self-test against the baseline;
* choice.py: HKLFLOW_CODEC=auto|compiled|library picks one of them;
* chunks.py: raw chunks read and written (read_chunk, ChunkReader, ChunkWriter) and frames
  as their chunks (stored_frames, CompressedFrames).

Importing this package loads neither numba nor the compiled codec."""
from .choice import CODEC_ENV, CodecUnavailable, active_codec, library_codec
from .chunks import ChunkReader, ChunkWriter, CompressedFrames, codec_for, read_chunk, stored_frames
from .framing import (BLOCKED_MULT, HEADER_BYTES, bitshuffle_lz4_only, block_count, blocks_fit,
                      chunk_header, default_block_elements, read_header)

__all__ = ["BLOCKED_MULT", "CODEC_ENV", "HEADER_BYTES", "ChunkReader", "ChunkWriter",
           "CodecUnavailable", "CompressedFrames", "active_codec", "bitshuffle_lz4_only",
           "block_count", "blocks_fit", "chunk_header", "codec_for", "default_block_elements",
           "library_codec", "read_chunk", "read_header", "stored_frames"]
