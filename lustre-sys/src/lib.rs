//! Raw FFI to liblustreapi (issue 3).
