"""The add-on's bpy-free rules for jobs: which Manager, what the Manager offers, and what
the panel hands the engine for a job type's settings. Real stand-in Manager over HTTP."""

from __future__ import annotations

import copy

from flamenco_shaman.engine.flamenco.jobtypes import parse_job_type
from flamenco_shaman.ui import catalog, job_settings
from flamenco_shaman.ui.connection import manager_address
from flamenco_standin import SIMPLE_BLENDER_RENDER

SIMPLE = parse_job_type(SIMPLE_BLENDER_RENDER)


def always_linked(key: str) -> bool:
    return True


# --- Which Manager ---------------------------------------------------------------------


def test_manager_url_set_in_the_preferences_wins_over_the_environment():
    env = {"FLAMENCO_MANAGER_URL": "http://env:8080/"}
    assert manager_address("http://prefs:8080/", True, "", env) == ("http://prefs:8080/", None)


def test_environment_names_the_manager_when_the_preferences_never_did():
    env = {"FLAMENCO_MANAGER_URL": " http://farm:8080/ ", "FLAMENCO_SHAMAN_TOKEN": "s3cret"}
    assert manager_address("http://localhost:8080/", False, "", env) == (
        "http://farm:8080/",
        "s3cret",
    )


def test_without_environment_the_default_url_is_used():
    assert manager_address("http://localhost:8080/", False, "", {}) == (
        "http://localhost:8080/",
        None,
    )


def test_an_emptied_preference_falls_back_to_the_environment():
    env = {"FLAMENCO_MANAGER_URL": "http://farm:8080/"}
    assert manager_address("", True, "", env)[0] == "http://farm:8080/"


def test_token_from_the_preferences_wins_over_the_environment():
    env = {"FLAMENCO_SHAMAN_TOKEN": "env-token"}
    assert manager_address("http://m/", True, "prefs-token", env)[1] == "prefs-token"


# --- What the panel shows and hands the engine --------------------------------------------


def test_shown_settings_are_visible_and_submission_ones_without_blendfile():
    shown = [s.key for s in job_settings.shown_settings(SIMPLE)]
    assert shown == [
        "frames",
        "chunk_size",
        "render_output_root",
        "add_path_components",
        "render_output_path",
    ]


def test_only_shown_editable_settings_are_kept_with_the_scene():
    stored = [s.key for s in SIMPLE.settings if job_settings.is_stored(s)]
    assert stored == ["frames", "chunk_size", "render_output_root", "add_path_components"]


def test_linked_and_hidden_expressions_are_evaluated_at_submit():
    stored = {"frames": "1-10", "chunk_size": 2, "render_output_root": "", "add_path_components": 0}
    given, always = job_settings.submit_inputs(SIMPLE, stored, always_linked)
    assert given == {"frames": "1-10", "chunk_size": 2, "add_path_components": 0}
    assert always == {"frames", "fps", "format", "image_file_extension", "has_previews", "scene"}


def test_an_unlinked_field_is_submitted_as_typed():
    stored = {"frames": "1-10"}
    given, always = job_settings.submit_inputs(SIMPLE, stored, lambda key: key != "frames")
    assert given == {"frames": "1-10"}
    assert "frames" not in always


def test_an_empty_field_is_not_given_so_its_expression_default_or_fallback_applies():
    given, _ = job_settings.submit_inputs(SIMPLE, {"render_output_root": ""}, always_linked)
    assert "render_output_root" not in given


# --- What the Manager offers ----------------------------------------------------------------


def test_catalog_holds_the_managers_job_types_and_worker_tags(flamenco):
    offer = catalog.fetch(flamenco.url)
    assert [t.name for t in offer.job_types] == [
        "echo-sleep-test",
        "settings-test",
        "simple-blender-render",
    ]
    assert offer.job_type("simple-blender-render").etag
    tag = flamenco.state.worker_tags[0]
    assert offer.worker_tags == (catalog.WorkerTag(tag["id"], tag["name"], tag["description"]),)


def test_unknown_type_message_names_what_the_manager_offers(flamenco):
    offer = catalog.fetch(flamenco.url)
    assert offer.job_type("nope") is None
    assert offer.unknown_type_message("nope") == (
        "The Manager has no job type 'nope' "
        "(it offers: echo-sleep-test, settings-test, simple-blender-render)"
    )


def test_fetch_in_a_thread_publishes_the_catalog(flamenco, monkeypatch):
    monkeypatch.setattr(catalog, "current", None)
    fetch = catalog.CatalogFetch(flamenco.url).start()
    fetch._done.wait(30)
    assert fetch.done and fetch.error is None
    assert catalog.publish(fetch) is fetch.catalog
    assert catalog.for_url(flamenco.url) is fetch.catalog
    assert catalog.for_url("http://elsewhere/") is None


def test_failed_fetch_keeps_the_last_catalog_and_says_why(flamenco, monkeypatch):
    good = catalog.fetch(flamenco.url)
    monkeypatch.setattr(catalog, "current", good)
    monkeypatch.setattr(catalog, "last_error", None)
    fetch = catalog.CatalogFetch("http://127.0.0.1:1/").start()
    fetch._done.wait(30)
    assert catalog.publish(fetch) is None
    assert catalog.current is good
    assert "http://127.0.0.1:1/" in catalog.last_error


def test_a_changed_job_type_is_seen_on_the_next_fetch(flamenco):
    before = catalog.fetch(flamenco.url).job_type("simple-blender-render").etag
    edited = copy.deepcopy(SIMPLE_BLENDER_RENDER)
    edited["description"] = "edited"
    flamenco.set_job_type(edited)
    assert catalog.fetch(flamenco.url).job_type("simple-blender-render").etag != before
