//! In-process fake SMTP/IMAP/POP3/HTTP/MAPI servers for tests of every crate: each can
//! be told to answer well, refuse, hang, send a bad greeting or die mid-session.
