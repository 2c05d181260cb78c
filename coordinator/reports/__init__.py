"""Reports: the read model for people and programs; nothing here writes.

Owns reading the SQL views (`queries`), terminal tables, CSV and JSON (`terminal`), the figures
(`figures`), the HTML report (`html`) and the answer of the final evaluation (`answer`). May import
`evaluation`, `lifecycle`, `studies`, `data` and `store`; never the commands or the worker.
"""
