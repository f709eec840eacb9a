"""Model folders in ComfyUI's registry (folder_paths): ours are added, ComfyUI's and other packs' are left as they are.

A folder key's extension set is what every pack's `folder_paths.get_filename_list(key)` filters by. A key
that exists already (ComfyUI's own `classifiers`, another pack's, or one made by extra_model_paths.yaml)
keeps its set and its paths; our node lists filter for our extensions themselves (`filename_list`).
"""

from __future__ import annotations

import os

import folder_paths


def register_model_folder(name: str, extensions) -> None:
    """A new key `name` gets models/<name> and `extensions`. An existing key is never narrowed: its
    extension set and paths stay (other packs list files through them); models/<name> is appended
    when it is missing. Model files are only ever resolved through this registry."""
    default = os.path.join(folder_paths.models_dir, name)
    if name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name] = ([default], set(extensions))
        return
    paths = folder_paths.folder_names_and_paths[name][0]
    if default not in paths:
        paths.append(default)


def filename_list(name: str, extensions) -> list[str]:
    """Files (relative names, sorted) under every path of the key `name` whose extension is one of
    `extensions`, whatever extension set the key itself has."""
    found = set()
    for base in folder_paths.get_folder_paths(name):
        files, _dirs = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
        found.update(folder_paths.filter_files_extensions(files, set(extensions)))
    return sorted(found)


def file_fingerprint(name: str, filename: str) -> str:
    """A loader node's fingerprint_inputs: ComfyUI runs the loader again when this value changes. It is the
    resolved path with the file's size, modification time and inode, so a file replaced, rewritten or deleted
    under a running server is read (and checked) again instead of ComfyUI handing on the object it cached."""
    path = folder_paths.get_full_path(name, filename)
    if path is None:
        return f"missing:{filename}"
    try:
        st = os.stat(path)
    except OSError as e:
        return f"unreadable:{path}:{e.errno}"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
