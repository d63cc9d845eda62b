/**
 * The text C's strerror() gives for the errno a Node error carries, so that our messages read as
 * QEMU's ("Could not open 'x': No such file or directory"). Anything not in the table keeps
 * Node's own message. No Node imports: a plain table, shared by the Node backends and chardevs.
 */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  EACCES: 'Permission denied',
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  ECONNREFUSED: 'Connection refused',
  EINVAL: 'Invalid argument',
  EISDIR: 'Is a directory',
  ENAMETOOLONG: 'File name too long',
  ENOENT: 'No such file or directory',
  ENOSPC: 'No space left on device',
  ENOTDIR: 'Not a directory',
  ENOTSOCK: 'Socket operation on non-socket',
  EPIPE: 'Broken pipe',
  EROFS: 'Read-only file system',
  ETIMEDOUT: 'Connection timed out',
};

export function strerror(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const text = typeof code === 'string' ? ERRNO_TEXT[code] : undefined;
  return text ?? (e instanceof Error ? e.message : String(e));
}
