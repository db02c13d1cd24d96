"""Evaluation of generated music: `tokmusic eval` and the pieces behind it.

    from tokmusic.evaluation.report import evaluate
    result = evaluate("generated/", "reference/", videos="videos/")

Modules: `embedders` / `visual` (what turns clips into vectors), `structure` (tempo, beats, onsets,
sections, key), `video_events` (cuts, motion), `alignment` and `events` (audio-visual scores), `report`
(the whole evaluation), `plots` (PNGs), `command` (the CLI), `known_answer` (the demo world's judge, behind
benchmarks/known_answer.py). Distribution metrics live in `tokmusic.metrics`.
"""
