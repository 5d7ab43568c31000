"""Output-length predictors behind one small interface (`base`), built by spec (`registry`).

Subpackages by lifecycle: `self_query` (the serving model predicts its own length), `learned`
(online prompt model), `auto` (choose by measured rank quality) run in the gateway; `offline`
holds evaluation, reports and training CLIs. Kept empty so that importing one predictor
does not import them all.
"""
