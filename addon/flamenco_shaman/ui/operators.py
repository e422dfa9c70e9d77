"""Submit, Cancel, Copy Farm Path and Open Job operators.

Submit evaluates the job's settings and saves a temporary copy on the main thread, then
runs the engine (upload, checkout, render job) in a worker thread (`job.SubmitJob`) and
watches it from a modal timer, so Blender stays responsive; executed directly (scripts,
background mode) it runs synchronously and leaves the result on
`window_manager.flamenco_shaman`. A Submit before the job types are known fetches them
first, in a thread too.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from ..engine import SubmitError
from . import catalog, job, job_spec
from .job_type_ops import POLL_SECONDS, fetch_now, redraw_properties, use_catalog
from .preferences import get_preferences, manager_of


class FLAMENCO_SHAMAN_OT_submit(bpy.types.Operator):
    """Send this blend file and everything it uses to the Flamenco farm and create the render job"""

    bl_idname = "flamenco_shaman.submit"
    bl_label = "Submit to Flamenco"

    _timer = None
    _job: job.SubmitJob | None = None
    _fetch: catalog.CatalogFetch | None = None

    def _can_start(self) -> bool:
        if job.current is not None and job.current.running:
            self.report({"ERROR"}, "A submission is already running; wait for it or cancel it")
            return False
        if catalog.pending is not None and catalog.pending.waiting:
            self.report({"ERROR"}, "Still asking the Manager for its job types; wait or cancel")
            return False
        if not bpy.data.filepath:
            self.report({"ERROR"}, "Save the blend file first: the farm needs it on disk")
            return False
        return True

    def _prepare(self, context: bpy.types.Context, offer: catalog.Catalog) -> job.SubmitJob | None:
        """Build the job and save the temporary copy; None (after a report) if we can't.

        Settings are evaluated before anything is written, so a failing expression
        leaves no copy behind.
        """
        if not self._can_start():
            return None
        try:
            spec = job_spec.build(context, offer)
        except job_spec.JobSpecError as ex:
            self.report({"ERROR"}, str(ex))
            return None
        original = Path(bpy.data.filepath)
        prefs = get_preferences(context)
        url, token = manager_of(context)
        settings = context.scene.flamenco_shaman
        root = Path(bpy.path.abspath(settings.project_root)) if settings.project_root else None
        copy_path = job.temp_copy_path(original)
        temp: Path | None = copy_path  # None: the file on disk is sent as it is
        if not os.access(original.parent, os.W_OK):
            if bpy.data.is_dirty:
                self.report(
                    {"ERROR"},
                    f"{original.parent} is read-only, so the unsaved changes can't be sent; "
                    "save the file somewhere writable first",
                )
                return None
            # Nothing unsaved: the file on disk is exactly what the artist sees; send it.
            temp = None
        else:
            try:
                # copy=True leaves bpy.data.filepath and is_dirty alone: the artist's file
                # and its unsaved-changes state stay as they were. Same directory, so
                # relative (//) paths still resolve.
                bpy.ops.wm.save_as_mainfile(
                    filepath=str(copy_path), copy=True, relative_remap=True, check_existing=False
                )
            except RuntimeError as ex:
                copy_path.unlink(missing_ok=True)
                self.report({"ERROR"}, f"Cannot save a temporary copy next to the blend: {ex}")
                return None
        request = job.JobRequest(
            original_blend=original,
            temp_blend=temp,
            manager_url=url,
            checkout_path=job.checkout_path_for(settings.checkout_name, original),
            project_root=root,
            relative_only=settings.relative_only,
            uploads=prefs.uploads,
            token=token,
            job=spec,
        )
        try:
            submit_job = job.SubmitJob(request)
        except Exception as ex:
            if temp is not None:
                temp.unlink(missing_ok=True)
            self.report({"ERROR"}, f"Cannot start the submission: {ex}")
            return None
        job.current = submit_job
        return submit_job

    def _finish(self, context: bpy.types.Context, done: job.SubmitJob) -> set[str]:
        """Publish the outcome on the WindowManager and in the status bar."""
        state = context.window_manager.flamenco_shaman
        result = done.result
        state.farm_path = result.farm_blend_path if result else ""
        state.checkout_path = result.checkout_path if result else ""
        state.files_uploaded = result.files_uploaded if result else 0
        state.files_total = result.files_total if result else 0
        state.missing_count = len(result.missing_files) if result else 0
        state.warning_count = len(result.warnings) if result else 0
        state.job_id = (result.job_id or "") if result else ""
        state.job_name = (result.job_name or "") if result else ""
        state.job_url = (result.job_url or "") if result else ""
        state.error = job.last_error or ""
        if result is None:
            self.report({"WARNING"} if done.cancelled else {"ERROR"}, state.error)
            return {"CANCELLED"}
        uploaded = job.format_bytes(result.bytes_uploaded)
        self.report(
            {"INFO"},
            f"Created render job '{state.job_name}' ({state.job_id}) for {result.farm_blend_path} "
            f"({result.files_uploaded} of {result.files_total} files uploaded, {uploaded})",
        )
        if result.missing_files:
            self.report(
                {"WARNING"},
                f"{len(result.missing_files)} missing asset(s) were not sent; "
                "see the Flamenco Shaman panel",
            )
        if result.warnings:
            self.report(
                {"WARNING"},
                f"The manager warns: {result.warnings[0]}"
                + (f" (and {len(result.warnings) - 1} more)" if len(result.warnings) > 1 else "")
                + "; see the Flamenco Shaman panel",
            )
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Scripts and background mode: run to completion so the caller can read the result.
        if not self._can_start():
            return {"CANCELLED"}
        url, token = manager_of(context)
        offer = catalog.for_url(url)
        if offer is None:
            try:
                offer = fetch_now(context, url, token)
            except SubmitError as ex:
                self.report({"ERROR"}, f"Cannot get the job types: {ex}")
                return {"CANCELLED"}
        submit_job = self._prepare(context, offer)
        if submit_job is None:
            return {"CANCELLED"}
        submit_job.run()
        return self._finish(context, submit_job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._can_start():
            return {"CANCELLED"}
        url, token = manager_of(context)
        offer = catalog.for_url(url)
        if offer is None:
            # Job types not known yet: fetch them first, without blocking the UI.
            self._fetch = catalog.start_fetch(url, token)
        elif not self._start(context, offer):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(POLL_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        redraw_properties(context)
        return {"RUNNING_MODAL"}

    def _start(self, context: bpy.types.Context, offer: catalog.Catalog) -> bool:
        submit_job = self._prepare(context, offer)
        if submit_job is None:
            return False
        self._job = submit_job
        submit_job.start()
        return True

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        redraw_properties(context)
        if self._fetch is not None:
            if self._fetch.waiting:
                return {"PASS_THROUGH"}
            if self._fetch.cancelled:
                context.window_manager.event_timer_remove(self._timer)
                context.window_manager.flamenco_shaman.error = "Submission cancelled"
                self.report({"WARNING"}, "Submission cancelled")
                return {"CANCELLED"}
            fetched = catalog.publish(self._fetch)
            self._fetch = None
            if fetched is None:
                context.window_manager.event_timer_remove(self._timer)
                self.report({"ERROR"}, f"Cannot get the job types: {catalog.last_error}")
                return {"CANCELLED"}
            use_catalog(context, fetched)
            if not self._start(context, fetched):
                context.window_manager.event_timer_remove(self._timer)
                return {"CANCELLED"}
            return {"PASS_THROUGH"}
        if self._job is None or self._job.running:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context, self._job)


class FLAMENCO_SHAMAN_OT_cancel(bpy.types.Operator):
    """Stop the running submission; nothing is created on the farm"""

    bl_idname = "flamenco_shaman.cancel"
    bl_label = "Cancel Submission"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        running = job.current is not None and job.current.running
        return running or (catalog.pending is not None and catalog.pending.waiting)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if catalog.pending is not None:
            catalog.pending.cancel()
        job.cancel_current(wait=0.0)
        self.report({"INFO"}, "Cancelling submission")
        return {"FINISHED"}


class FLAMENCO_SHAMAN_OT_copy_farm_path(bpy.types.Operator):
    """Copy the blend file's path on the farm to the clipboard"""

    bl_idname = "flamenco_shaman.copy_farm_path"
    bl_label = "Copy Farm Path"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.window_manager.flamenco_shaman.farm_path)

    def execute(self, context: bpy.types.Context) -> set[str]:
        wm = context.window_manager
        wm.clipboard = wm.flamenco_shaman.farm_path
        self.report({"INFO"}, f"Copied {wm.flamenco_shaman.farm_path}")
        return {"FINISHED"}


class FLAMENCO_SHAMAN_OT_open_job(bpy.types.Operator):
    """Open the render job in the Manager's web interface"""

    bl_idname = "flamenco_shaman.open_job"
    bl_label = "Open Job in Flamenco"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.window_manager.flamenco_shaman.job_url)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return bpy.ops.wm.url_open(url=context.window_manager.flamenco_shaman.job_url)


classes = (
    FLAMENCO_SHAMAN_OT_submit,
    FLAMENCO_SHAMAN_OT_cancel,
    FLAMENCO_SHAMAN_OT_copy_farm_path,
    FLAMENCO_SHAMAN_OT_open_job,
)

register, unregister = bpy.utils.register_classes_factory(classes)
