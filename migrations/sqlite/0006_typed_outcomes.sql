-- Trigger outcomes become tagged JSON (`{"outcome": "released", "version": ...}`), read into
-- one type; the earlier plain strings are rewritten. An intent recorded before a push was JSON
-- already and gains its tag.
UPDATE trigger_outcomes SET outcome = '{"outcome":"rejected"}' WHERE outcome = 'rejected';
UPDATE trigger_outcomes SET outcome = '{"outcome":"rejecting"}' WHERE outcome = 'rejecting';
UPDATE trigger_outcomes
   SET outcome = json_object('outcome', 'released', 'version', substr(outcome, 10))
 WHERE outcome LIKE 'released:%';
UPDATE trigger_outcomes
   SET outcome = json_set(outcome, '$.outcome', 'starting')
 WHERE outcome LIKE '{%' AND json_extract(outcome, '$.outcome') IS NULL;
