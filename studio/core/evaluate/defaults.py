"""The evaluation's defaults, in one place: the command line, the window and the bench read them here."""

DEFAULT_CONTEXT = 512  # tokens per window; llama.cpp's perplexity tool uses the same
DEFAULT_MAX_TOKENS = 4096  # tokens of the text scored at most
MIN_TOKENS = 2  # one prediction; the verdict warns when few tokens make the figures noisy
MIN_CONTEXT = 2
SAMPLE_NAME = "eval_sample.txt"  # the bundled held-out text (package data)

# KL percentiles reported, as llama.cpp's KL-divergence mode prints them (90, 95, 99, 99.9).
KLD_PERCENTILES = (90.0, 95.0, 99.0, 99.9)

# How the models compute (the choices are studio.core.runtime.compute_path's; "auto" picks by backend).
DEFAULT_COMPUTE = "auto"

# Which positions of a window count: "all" of them, or "second-half" as llama.cpp's perplexity tool
# scores (each scored token then has at least half a window of context; GGUF/EXL3 cards use it).
SCORE_CHOICES = ("all", "second-half")
DEFAULT_SCORE = "all"
