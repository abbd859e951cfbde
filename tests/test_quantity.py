"""Whole quantity phrases: a copied number, date or time cut or widened to the phrase in its passage."""
from __future__ import annotations

import pytest

from workbench.answering.quantity import quantity_phrase
from workbench.core.language import stopwords

SOURCES = [
    "A fully charged Plover P4 measures for 14 hours of continuous use.",
    "After installing a new KB-24, the capacity learning must run for 6 hours and must not be interrupted; "
    "during that time the buoy stays ashore.",
    "Harbourline 7.4 — 8 April 2025",
    "Support is open from 07:00 to 19:00 CET on working days.",
    "Duration of outage: 4 hours 12 minutes",
    "Ridge and Summit customers call +00 417 550 2290, day and night.",
    "The fitness allowance is €300 a year. Volunteers may take 2 volunteering days per year.",
    "Parts stay in stock until December 2027, while the 08:30 start applies at the Gatehouse.",
    "The company reached 100 employees in March 2016 and moved in 2018.",
    "The heater draws 18 W while it runs, and the hull takes 180 kN without deformation.",
    "The wind must stay below 13 m/s, and 27 days of paid annual leave are granted.",
]


@pytest.mark.parametrize("reply, phrase", [
    ("14", "14 hours"),                            # too short: the unit is added
    ("6 hours and must not be interrupted", "6 hours"),  # too long: cut after the unit
    ("2025", "8 April 2025"),                      # a date's day and month
    ("19:00 CET", "07:00 to 19:00 CET"),           # a range of times of day
    ("12 minutes", "4 hours 12 minutes"),          # a compound duration
    ("2290", "+00 417 550 2290"),                  # digit groups
    ("300", "€300"),                               # copied from inside a word: the currency sign comes along
    ("2", "2 volunteering days"),                  # a counted noun and its unit
    ("2027", "December 2027"),
    ("08:30 start applies", "08:30"),              # money, dates and times take known units only
    ("18", "18 W"),                                # a known unit ends the phrase ("while" is no unit)
    ("180 kN without deformation", "180 kN"),
    ("13", "13 m/s"),
    ("27 days of paid annual leave", "27 days"),
])
def test_quantity_phrase_cuts_or_widens_to_the_phrase_in_the_passage(reply, phrase):
    assert quantity_phrase(reply, SOURCES, "?", stopwords("en")) == phrase


def test_quantity_phrase_keeps_a_year_alone_when_the_question_asks_for_one():
    assert quantity_phrase("2016", SOURCES, "In what year did we reach 100 employees?", stopwords("en")) == "2016"
    assert quantity_phrase("2016", SOURCES, "When did we reach 100 employees?", stopwords("en")) == "March 2016"


@pytest.mark.parametrize("reply", ["Sølvi Brekke", "I don't know", "", "42", "hours 14"])
def test_quantity_phrase_leaves_other_replies_alone(reply):
    # names and abstentions are no quantities; "42" is not in the sources; "hours 14" does not start with one
    assert quantity_phrase(reply, SOURCES, "?", stopwords("en")) == reply


def test_quantity_phrase_looks_in_the_sources_in_the_given_order():
    sources = ["Version 2 shipped on 3 May 2024.", "Version 3 shipped on 9 June 2024."]
    assert quantity_phrase("2024", sources) == "3 May 2024"
    assert quantity_phrase("2024", sources[::-1]) == "9 June 2024"

