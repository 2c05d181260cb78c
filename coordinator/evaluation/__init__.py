"""Final evaluation: re-train the best configurations with fresh seeds, score them once on the test
split, and turn the scores into intervals and a scaling verdict (see README "Final evaluation")."""
