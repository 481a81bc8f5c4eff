//! TODO(helper): to be written.
