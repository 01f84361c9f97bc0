"""What the terminal UI shows, computed without a terminal: the hub thread, snapshots, the launch form's model.

Nothing here imports Textual or rich (tests/test_import_contracts.py holds it to that), so every number
and every decision the UI makes can be tested without a screen, and `sgtui.tui` is only widgets and screens
drawing what these modules hand them.
"""
