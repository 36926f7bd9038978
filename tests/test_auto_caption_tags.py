"""Caption post-processing and caption-file writing: the rules every captioner shares."""
from __future__ import annotations

import pytest

from harness import runtime

tags = runtime.pack("trainer.captioning.tags")
writing = runtime.pack("trainer.captioning.writing")


def test_trigger_first_then_tags_in_order_with_underscores_replaced():
    assert tags.finalize_caption(["1girl", "long_hair", "smile"], prefix="ohwx") == "ohwx, 1girl, long hair, smile"
    assert tags.finalize_caption(["long_hair"], replace_underscores=False) == "long_hair"


def test_duplicates_and_excluded_tags_match_across_case_spaces_and_underscores():
    caption = tags.finalize_caption(["Long_Hair", "long hair", "blue_eyes", "ohwx", "smile"], prefix="OHWX",
                                    exclude=["blue eyes"])
    assert caption == "OHWX, Long Hair, smile"


def test_rating_tags_are_dropped_and_max_tags_counts_after_the_trigger():
    caption = tags.finalize_caption(["rating:safe", "rating_explicit", "a", "b", "c"], prefix="t", max_tags=2)
    assert caption == "t, a, b"


def test_parentheses_are_escaped_once_and_kaomoji_keep_their_underscores():
    caption = tags.finalize_caption(["star_(symbol)", r"already_\(escaped\)", "^_^", ">_<"], prefix="name (artist)")
    assert caption == r"name \(artist\), star \(symbol\), already \(escaped\), ^_^, >_<"
    assert tags.tag_key(r"star_\(symbol\)") == tags.tag_key("Star (Symbol)")


def test_a_sentence_is_one_part_and_is_never_cut_by_max_tags():
    sentence = "a woman standing on a beach, smiling, at sunset"
    assert tags.finalize_caption([sentence], prefix="ohwx", max_tags=1) == f"ohwx, {sentence}"


def test_fill_missing_writes_only_where_no_text_exists_at_write_time(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    assert writing.store_caption(empty, "new", "fill_missing").action == "written"
    assert empty.read_text(encoding="utf-8") == "new\n"
    appeared = tmp_path / "appeared.txt"
    appeared.write_text("written by the user meanwhile", encoding="utf-8")
    result = writing.store_caption(appeared, "new", "fill_missing")
    assert (result.action, result.caption) == ("kept", "written by the user meanwhile")
    assert appeared.read_text(encoding="utf-8") == "written by the user meanwhile"


def test_overwrite_backups_are_numbered_and_byte_identical(tmp_path):
    caption = tmp_path / "image.txt"
    original = "元のキャプション\nsecond line".encode("cp932")
    caption.write_bytes(original)
    first = writing.store_caption(caption, "one", "overwrite")
    second = writing.store_caption(caption, "two", "overwrite")
    assert (first.action, first.backup.name, second.backup.name) == ("replaced", "image.txt.bak", "image.txt.bak2")
    assert first.backup.read_bytes() == original and second.backup.read_bytes() == b"one\n"
    assert caption.read_bytes() == b"two\n"
    assert writing.store_caption(caption, "two", "overwrite").action == "unchanged"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["image.txt", "image.txt.bak", "image.txt.bak2"]


def test_memory_only_touches_no_file(tmp_path):
    caption = tmp_path / "image.txt"
    assert writing.store_caption(caption, "text", "memory_only").action == "memory"
    assert not caption.exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    blocked = tmp_path / "image.txt"  # a folder where the caption should go: the final rename fails
    blocked.mkdir()
    (blocked / "keep").write_text("x", encoding="utf-8")
    with pytest.raises(OSError):
        writing.write_text_atomically(blocked, "new")
    assert [path.name for path in tmp_path.iterdir()] == ["image.txt"]
    assert (blocked / "keep").read_text(encoding="utf-8") == "x"
