"""Non-VSML learners behind the same (init, step) episode interface as VSML."""
