"""Names Windows and macOS workers cannot hold: the pure check, and `shaman.portableNames`
(warn, refuse, off) on the real server."""

from __future__ import annotations

import hashlib
import logging
import textwrap
import unicodedata

import pytest
import requests

from manager_plugin.config import load_config
from manager_plugin.errors import ConfigError
from manager_plugin.portable import MAX_REPORTED, name_problem, portability_problems, summary

NFC = unicodedata.normalize("NFC", "café.png")
NFD = unicodedata.normalize("NFD", "café.png")
ONLY_CASE = "(they differ only in case)"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("scene.blend", None),
        ("con.blend.bak", "'con' is a reserved device name on Windows"),
        ("CON", "'CON' is a reserved device name on Windows"),
        ("aux.txt", "'aux' is a reserved device name on Windows"),
        ("Nul", "'Nul' is a reserved device name on Windows"),
        ("prn.PNG", "'prn' is a reserved device name on Windows"),
        ("COM1", "'COM1' is a reserved device name on Windows"),
        ("lpt9.log", "'lpt9' is a reserved device name on Windows"),
        ("COM¹.txt", "'COM¹' is a reserved device name on Windows"),
        ("nul .tar.gz", "'nul' is a reserved device name on Windows"),
        ("COM0", None),
        ("COM10", None),
        ("console.txt", None),
        ("auxiliary", None),
        ("trailing.", "ends with a dot or a space, which Windows drops"),
        ("trailing ", "ends with a dot or a space, which Windows drops"),
        ("...", "ends with a dot or a space, which Windows drops"),
        (".hidden", None),
        (" leading space", None),
        ("a<b", "contains '<', which Windows does not allow in names"),
        ("a>b", "contains '>', which Windows does not allow in names"),
        ("a:b", "contains ':', which Windows does not allow in names"),
        ('say "hi"', "contains '\"', which Windows does not allow in names"),
        ("a|b", "contains '|', which Windows does not allow in names"),
        ("why?", "contains '?', which Windows does not allow in names"),
        ("*.png", "contains '*', which Windows does not allow in names"),
        ("tab\there", "contains '\\t', which Windows does not allow in names"),
        ("bell\x07", "contains '\\x07', which Windows does not allow in names"),
        ("ránið vélmenni.blend", None),
        (NFD, None),  # alone it is one name everywhere
    ],
)
def test_name_problem_table(name, problem):
    assert name_problem(name) == problem


@pytest.mark.parametrize(
    ("paths", "problems"),
    [
        (["tex/a.png", "tex/b.png", "A.png"], []),
        (
            ["tex/A.png", "tex/a.png"],
            [f"'tex/a.png': is one name on Windows and macOS with 'tex/A.png' {ONLY_CASE}"],
        ),
        (
            ["Tex/a.png", "tex/b.png", "tex/c.png"],  # a directory clash is reported once
            ["'tex': is one name on Windows and macOS with 'Tex' (they differ only in case)"],
        ),
        (
            ["Scene", "scene/x.png"],  # a file and a directory
            ["'scene': is one name on Windows and macOS with 'Scene' (they differ only in case)"],
        ),
        (["a/A.png", "b/a.png"], []),  # different directories
        (
            [f"tex/{NFC}", f"tex/{NFD}"],
            [
                f"{ascii('tex/' + NFD)}: is one name on macOS with {ascii('tex/' + NFC)} "
                "(NFC and NFD spellings of the same characters)"
            ],
        ),
        (
            ["ÉTÉ.png", unicodedata.normalize("NFD", "été.png")],
            [
                f"{unicodedata.normalize('NFD', 'été.png')!r}: is one name on Windows and "
                "macOS with 'ÉTÉ.png' (they differ in case and spelling)"
            ],
        ),
        (
            ["aux/x.png", "aux/y.png"],  # a bad directory name is reported once
            ["'aux': 'aux' is a reserved device name on Windows"],
        ),
        (
            ["shots/take 1./a.png"],
            ["'shots/take 1.': ends with a dot or a space, which Windows drops"],
        ),
        (["a.png", "a.png"], []),  # the same path twice is one file
    ],
)
def test_portability_problems_table(paths, problems):
    assert portability_problems("job", paths) == problems


def test_the_checkout_path_is_checked_too():
    assert portability_problems("proj/CON/job.", ["f"]) == [
        "checkoutPath 'proj/CON': 'CON' is a reserved device name on Windows",
        "checkoutPath 'proj/CON/job.': ends with a dot or a space, which Windows drops",
    ]


def test_many_problems_are_summarized():
    problems = portability_problems("job", [f"x{i}." for i in range(MAX_REPORTED + 5)])
    shown = summary(problems)
    assert len(shown) == MAX_REPORTED + 1
    assert shown[-1] == "... and 5 more names not portable"


# ---- the setting ----------------------------------------------------------------------


def write_config(tmp_path, body: str):
    path = tmp_path / "flamenco-manager.yaml"
    path.write_text(f"shared_storage_path: {tmp_path}\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("value", "mode"), [("warn", "warn"), ("refuse", "refuse"), ("off", "off")]
)
def test_config_reads_portable_names(tmp_path, value, mode):
    path = write_config(tmp_path, f"shaman:\n  portableNames: {value}\n")
    assert load_config(path).portable_names == mode


def test_config_defaults_to_warn_and_names_the_key_when_wrong(tmp_path):
    assert load_config(write_config(tmp_path, "")).portable_names == "warn"
    with pytest.raises(ConfigError, match=r"shaman.portableNames \(line 3\): expected one of"):
        load_config(write_config(tmp_path, "shaman:\n  portableNames: sometimes\n"))


# ---- on the real server -----------------------------------------------------------------

CHECKOUT = "api/v3/shaman/checkout/create"


def upload_files(manager, names: dict[str, bytes]) -> list[dict[str, object]]:
    files = []
    for path, data in names.items():
        sha = hashlib.sha256(data).hexdigest()
        resp = requests.post(
            manager.api(f"api/v3/shaman/files/{sha}/{len(data)}"), data=data, timeout=30
        )
        assert resp.status_code in (204, 208)
        files.append({"sha": sha, "size": len(data), "path": path})
    return files


CLASHING = {"tex/A.png": b"upper", "tex/a.png": b"lower", "aux.txt": b"notes"}


def test_warn_makes_the_checkout_and_tells_the_artist_and_the_log(manager, caplog):
    files = upload_files(manager, CLASHING)
    with caplog.at_level(logging.WARNING, logger="manager_plugin.service"):
        resp = requests.post(
            manager.api(CHECKOUT), json={"checkoutPath": "job", "files": files}, timeout=30
        )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "checkoutPath": "job",
        "warnings": [
            "'tex/a.png': is one name on Windows and macOS with 'tex/A.png' "
            "(they differ only in case)",
            "'aux.txt': 'aux' is a reserved device name on Windows",
        ],
    }
    assert (manager.jobs / "job/tex/a.png").read_bytes() == b"lower"
    logged = [r.getMessage() for r in caplog.records if r.name == "manager_plugin.service"]
    assert len(logged) == 1
    assert "checkout job: 2 names are not portable" in logged[0] and "tex/a.png" in logged[0]
    # A portable checkout's answer is exactly Flamenco's.
    fine = upload_files(manager, {"scene.blend": b"fine"})
    resp = requests.post(
        manager.api(CHECKOUT), json={"checkoutPath": "job2", "files": fine}, timeout=30
    )
    assert resp.json() == {"checkoutPath": "job2"}


def test_refuse_answers_400_naming_the_path_and_makes_nothing(manager_factory):
    manager = manager_factory(portable_names="refuse")
    files = upload_files(manager, CLASHING)
    resp = requests.post(
        manager.api(CHECKOUT), json={"checkoutPath": "job", "files": files}, timeout=30
    )
    assert resp.status_code == 400
    message = resp.json()["message"]
    assert "not portable to Windows/macOS workers" in message
    assert "'tex/a.png'" in message and "differ only in case" in message
    assert "(and 1 more)" in message
    assert list(manager.jobs.iterdir()) == []
    # The legacy (bat pack) protocol is held to the same rule.
    cdf = "\n".join(f"{f['sha']} {f['size']} {f['path']}" for f in files).encode()
    legacy = requests.post(manager.url + "checkout/create/job", data=cdf, timeout=30)
    assert legacy.status_code == 400
    assert list(manager.jobs.iterdir()) == []


def test_off_says_nothing(manager_factory, caplog):
    manager = manager_factory(portable_names="off")
    files = upload_files(manager, CLASHING)
    with caplog.at_level(logging.WARNING, logger="manager_plugin.service"):
        resp = requests.post(
            manager.api(CHECKOUT), json={"checkoutPath": "job", "files": files}, timeout=30
        )
    assert resp.json() == {"checkoutPath": "job"}
    assert not [r for r in caplog.records if r.name == "manager_plugin.service"]
