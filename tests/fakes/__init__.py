"""Tests of the fake providers in aigw_fakes."""
