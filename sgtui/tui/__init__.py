"""sgtui's terminal UI (Textual). Entry points for the CLI are in `sgtui.tui.app`.

    app.py          SgtuiApp, make_app, run_live, run_replay
    hub.py          the thread that owns session states: folds events, plays files back, builds snapshots
    views.py        immutable snapshots (RunView, GpuView, Snapshot) and their builder; no Textual
    launch_model.py launch form values <-> RunConfigs, last-session prefill; no Textual
    detach.py       the orchestrator as a process of its own (runs outlive the UI)
    screens/        launch, live (dashboard), replay, verdict, dialogs
    widgets/        gpu_panel, metrics_table, timeline, log_pane, status_line
"""
