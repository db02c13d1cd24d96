import pytest
import torch

from tokmusic.windows import Window, plan_windows, token_count, token_window, visual_window


def test_plan_exact():
    assert plan_windows(25, 10, 5) == [Window(0, 10, 0), Window(5, 15, 5), Window(10, 20, 5), Window(15, 25, 5)]
    # the last window is moved back to full length: more context, same new tokens
    assert plan_windows(23, 10, 4) == [Window(0, 10, 0), Window(6, 16, 4), Window(12, 22, 4), Window(13, 23, 9)]
    assert plan_windows(7, 10, 5) == [Window(0, 7, 0)]
    assert plan_windows(0, 10, 5) == []


@pytest.mark.parametrize("total", [1, 9, 10, 11, 99, 250, 3001])
@pytest.mark.parametrize("window,overlap", [(10, 0), (10, 5), (10, 9), (150, 50)])
def test_windows_cover_everything_once(total, window, overlap):
    windows = plan_windows(total, window, overlap)
    covered = torch.zeros(total, dtype=torch.long)
    done = 0
    for w in windows:
        assert w.length <= window
        assert w.start + w.prompt == done  # the prompt is exactly what was generated before
        assert w.prompt < w.length
        covered[w.start + w.prompt : w.end] += 1
        done = w.end
    assert done == total
    assert torch.equal(covered, torch.ones(total, dtype=torch.long))


def test_token_and_visual_windows():
    tokens = torch.arange(100).view(1, 100)  # 25 per second, 4 s
    assert torch.equal(token_window(tokens, 25.0, 1.0, 2.0), torch.arange(25, 50).view(1, 25))
    assert token_window(tokens, 25.0, 3.99, 4.0).shape[-1] == 1
    assert token_count(4.0, 25.0) == 100
    assert token_count(4.01, 25.0) == 101
    assert token_count(0.001, 50.0) == 1
    times = torch.arange(8, dtype=torch.float64) / 2  # 2 fps
    feats = torch.arange(8.0).view(8, 1)
    f, t = visual_window(feats, times, 1.0, 2.5)
    assert f.flatten().tolist() == [2.0, 3.0, 4.0]
    assert t.tolist() == [0.0, 0.5, 1.0]
    f, t = visual_window(feats, times, 1.2, 1.4)  # no frame inside: the one showing at t0
    assert f.flatten().tolist() == [2.0]
