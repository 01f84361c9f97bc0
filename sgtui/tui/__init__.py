"""sgtui's terminal UI (Textual). Entry points for the CLI are in `sgtui.tui.app`.

    app.py          SgtuiApp, make_app, run_live, run_replay
    app_config.py   what an app is started with (session, playback, test hooks) as three dataclasses
    run_control.py  starting, finishing, cancelling, detaching and quitting runs (the app's base class)
    messages.py     what the app's workers post to it
    host.py         UiHost: what screens may ask of the app (a Protocol: screens never import the app)
    detach.py       the orchestrator as a process of its own (runs outlive the UI)
    screens/        launch, live (dashboard), replay, verdict, dialogs
    widgets/        gpu_panel, metrics_table, timeline, log_pane, status_line

What they draw is computed in `sgtui.viewmodel` (hub, replay clock, commands, views, snapshot, launch
model, preflight view), which imports no Textual.
"""
