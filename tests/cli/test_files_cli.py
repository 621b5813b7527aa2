"""`im send --file`, `im history` with files, and `im download`, against a real cluster."""

from __future__ import annotations

import json

from tests.cli.test_cli import _login, _name
from tests.support import media


def test_send_list_and_download_files(sqlite_cluster, im, tmp_path):
    url = sqlite_cluster.url
    alice, bob = _name("alice"), _name("bob")
    _login(im, url, "alice", alice)
    _login(im, url, "bob", bob)
    picture = tmp_path / "sunset.png"
    picture.write_bytes(media.png(800, 600))
    note = tmp_path / "memo.wav"
    note.write_bytes(media.wav(2.0))
    report = tmp_path / "report.pdf"
    report.write_bytes(media.pdf())

    sent = im("-P", "alice", "send", bob, "--file", str(picture), "the view", "--json")
    assert sent.exit_code == 0, sent.output
    message = json.loads(sent.stdout)
    assert message["content"]["kind"] == "image" and message["content"]["caption"] == "the view"
    shown = im("-P", "alice", "send", bob, "-f", str(note))
    assert shown.exit_code == 0, shown.output
    assert "[voice] memo.wav" in shown.stdout and "#2" in shown.stdout
    forced = im("-P", "alice", "send", bob, "-f", str(picture), "--kind", "file")
    assert forced.exit_code == 0 and "[file] sunset.png" in forced.stdout
    assert im("-P", "alice", "send", bob, "-f", str(report)).exit_code == 0

    history = im("-P", "bob", "history", alice)
    assert history.exit_code == 0, history.output
    lines = history.stdout
    size = f"{picture.stat().st_size / 1000:.1f} KB"
    assert f"[image] sunset.png · {size} · 800x600 — the view" in lines
    assert "[voice] memo.wav" in lines and "0:02" in lines
    assert "[file] report.pdf" in lines and "application/pdf" in lines

    conversation = message["conversation"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    saved = im("-P", "bob", "download", conversation, "1", str(downloads), "--json")
    assert saved.exit_code == 0, saved.output
    result = json.loads(saved.stdout)
    assert result["kind"] == "image" and result["name"] == "sunset.png"
    assert (downloads / "sunset.png").read_bytes() == picture.read_bytes()
    thumb = im("-P", "bob", "download", alice, "1", str(downloads / "small.jpg"), "--thumbnail")
    assert thumb.exit_code == 0 and "saved image" in thumb.stdout
    assert (downloads / "small.jpg").stat().st_size < picture.stat().st_size
    voice = im("-P", "bob", "download", conversation, "2", str(downloads / "n.wav"))
    assert voice.exit_code == 0 and (downloads / "n.wav").read_bytes() == note.read_bytes()

    # Clear errors: a text message, a seq that does not exist, a refused file, a missing path.
    assert im("-P", "bob", "send", alice, "plain text").exit_code == 0
    text = im("-P", "bob", "download", conversation, "5")
    assert text.exit_code == 1 and "carries no file" in text.stderr
    missing = im("-P", "bob", "download", conversation, "99")
    assert missing.exit_code == 1 and "no message" in missing.stderr
    program = tmp_path / "tool.exe"
    program.write_bytes(media.pe_executable())
    refused = im("-P", "alice", "send", bob, "-f", str(program))
    assert refused.exit_code == 1 and "refused_type" in refused.stderr
    absent = im("-P", "alice", "send", bob, "-f", str(tmp_path / "nope.png"))
    assert absent.exit_code == 2
    wrong_kind = im("-P", "alice", "send", bob, "-f", str(report), "--kind", "movie")
    assert wrong_kind.exit_code == 2 and "--kind" in wrong_kind.stderr
