"""Model zoo: one family per file, each a plain ``nn.Module`` built by ``_target_``."""
