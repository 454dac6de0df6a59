"""tal: find when things happen in long, untrimmed videos."""

__version__ = "0.1.0"
