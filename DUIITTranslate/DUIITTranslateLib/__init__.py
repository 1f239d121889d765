"""Qt-free parts of the DUIIT Translate module (MRML glue around duiit.translate), importable headless."""
