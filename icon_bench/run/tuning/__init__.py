"""Tuning: a configuration's equal search budget on val (drawn, grid or TPE; in process or on Ray Tune), then test."""
