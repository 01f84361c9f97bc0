"""sgtui's terminal UI (Textual). Entry points for the CLI are in `sgtui.tui.app`.

    app.py          SgtuiApp, make_app, run_live, run_replay
    detach.py       the orchestrator as a process of its own (runs outlive the UI)
    screens/        launch, live (dashboard), replay, verdict, dialogs
    widgets/        gpu_panel, metrics_table, timeline, log_pane, status_line

What they draw is computed in `sgtui.viewmodel` (hub, views, launch_model), which imports no Textual.
"""
