"""The Checkout Definition File parser and answer formatter of the legacy (BAT) protocol."""

import pytest

from manager_plugin.cdf import (
    ANSWER_ALREADY_UPLOADING,
    ANSWER_FILE_UNKNOWN,
    CdfEntry,
    CdfError,
    format_answer,
    format_answer_line,
    parse_cdf,
)

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


def line(sha: str, size: int | str, path: str) -> bytes:
    return f"{sha} {size} {path}".encode()


def test_parses_lines_joined_by_newline_as_bat_sends_them():
    body = b"\n".join([line(SHA_A, 12, "scene.blend"), line(SHA_B, 0, "tex/wood.png")])
    assert parse_cdf(body) == [
        CdfEntry(SHA_A, 12, "scene.blend", 1),
        CdfEntry(SHA_B, 0, "tex/wood.png", 2),
    ]


def test_accepts_crlf_line_endings():
    body = line(SHA_A, 1, "a.blend") + b"\r\n" + line(SHA_B, 2, "b c.png") + b"\r\n"
    assert [(e.path, e.size) for e in parse_cdf(body)] == [("a.blend", 1), ("b c.png", 2)]


def test_accepts_a_trailing_newline():
    assert len(parse_cdf(line(SHA_A, 1, "a.blend") + b"\n")) == 1


def test_skips_blank_lines_but_counts_them_in_line_numbers():
    body = b"\n" + line(SHA_A, 1, "a") + b"\n  \n\r\n" + line(SHA_B, 2, "b") + b"\n\n"
    assert [(e.path, e.line_number) for e in parse_cdf(body)] == [("a", 2), ("b", 5)]


def test_empty_body_is_an_empty_checkout_definition():
    assert parse_cdf(b"") == []


@pytest.mark.parametrize(
    "path",
    [
        "with spaces in it/scene file.blend",
        "  leading and trailing spaces  ",
        "ránið/lélegt vélmenni.blend",
        "textures/ñønæščii 日本語.png",
    ],
)
def test_path_is_everything_after_the_second_space_verbatim(path):
    [entry] = parse_cdf(line(SHA_A, 3, path))
    assert entry.path == path


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (f"{SHA_A} 12".encode(), "got 2 field(s)"),
        (SHA_A.encode(), "got 1 field(s)"),
        (f"{SHA_A}\t12\tpath".encode(), "got 1 field(s)"),
        (f"{SHA_A} 12 ".encode(), "path is empty"),
        (f"{SHA_A}  12 path".encode(), "size '' is not a whole number"),
        (line("A" * 64, 1, "p"), "is not a SHA-256"),
        (line("a" * 63, 1, "p"), "is not a SHA-256"),
        (line("g" * 64, 1, "p"), "is not a SHA-256"),
        (line("../../etc/passwd", 1, "p"), "is not a SHA-256"),
        (line(SHA_A, -1, "p"), "size '-1' is not a whole number"),
        (line(SHA_A, "+5", "p"), "size '+5' is not a whole number"),
        (line(SHA_A, "1_000", "p"), "size '1_000' is not a whole number"),
        (line(SHA_A, "1.5", "p"), "size '1.5' is not a whole number"),
        (line(SHA_A, "١٢", "p"), "is not a whole number"),
        (SHA_A.encode() + b" 1 caf\xe9.png", "not valid UTF-8"),
    ],
)
def test_malformed_line_is_rejected_naming_its_number_and_problem(body, problem):
    good = line(SHA_B, 5, "ok.blend")
    with pytest.raises(CdfError) as caught:
        parse_cdf(good + b"\n\n" + body + b"\n" + good)
    assert caught.value.line_number == 3
    assert str(caught.value).startswith("line 3: ")
    assert problem in str(caught.value)


def test_error_message_quotes_only_the_start_of_a_very_long_value():
    with pytest.raises(CdfError) as caught:
        parse_cdf(b"x" * 100_000)
    assert len(str(caught.value)) < 300


def test_formats_requirements_answer_one_line_per_file():
    answer = format_answer(
        [(ANSWER_FILE_UNKNOWN, "scene.blend"), (ANSWER_ALREADY_UPLOADING, "tex/ñ wood.png")]
    )
    assert answer == "file-unknown scene.blend\nalready-uploading tex/ñ wood.png\n"


def test_answer_with_nothing_to_upload_is_empty():
    assert format_answer([]) == ""


def test_answer_line_parses_back_the_way_bat_splits_it():
    text = format_answer_line(ANSWER_FILE_UNKNOWN, "dir with space/a b.png")
    word, path = text.rstrip("\n").split(" ", 1)
    assert (word, path) == ("file-unknown", "dir with space/a b.png")


@pytest.mark.parametrize("path", ["a\nb", "a\rb"])
def test_answer_refuses_a_path_with_a_line_break(path):
    with pytest.raises(ValueError):
        format_answer_line(ANSWER_FILE_UNKNOWN, path)


def test_answer_refuses_an_unknown_word():
    with pytest.raises(ValueError):
        format_answer_line("stored", "a")  # type: ignore[arg-type]
