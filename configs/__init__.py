"""The experiment configs live in nucjax/configs (so that an installed nucjax has them); the
modules here re-export them for existing `--config=configs/NAME.py` paths and scripts."""
