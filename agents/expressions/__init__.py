"""The safe expression languages: the allow-listed expression compiler (``compiler``), its vectorised evaluator over
DataFrames (``vector``) and JsonLogic (``jsonlogic``). Pure: no Django; imports no area."""
