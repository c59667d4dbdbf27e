"""Small files facepipe needs at run time that the project made (installed as facepipe.assets)."""
