"""``transform=``: offline preprocessing, online augmentation, fitted normalisers, chart rendering."""
