"""The ``vitlens`` command line: the only code that parses arguments; each sub-command's job."""
