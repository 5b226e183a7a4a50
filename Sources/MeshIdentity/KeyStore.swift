import Glibc

/// Private keys at rest: one small JSON file per key (format in docs/identity.md), mode 0600, optionally
/// sealed under a passphrase. Every error message starts with the file's path.
public enum KeyStore {
    /// Key and passphrase files are a few hundred bytes; anything much larger is not one.
    static let maxFileSize = 64 * 1024

    /// Writes `key` to a new file at `path` with mode 0600, sealed under `passphrase` when one is given
    /// (Argon2id + XChaCha20-Poly1305). Never overwrites: an existing file is an error. Missing parent
    /// directories are created with mode 0700.
    public static func create(_ key: PrivateKey, at path: String, passphrase: [UInt8]?) throws(IdentityError) {
        var text = try reportingPath(path) { () throws(IdentityError) in
            try KeyFile(key: key, passphrase: passphrase).encoded()
        }
        defer { Secrets.wipe(&text) }
        try createDirectories(parentOf: path)
        try reportingPath(path) { () throws(IdentityError) in try writeNewFile(text, at: path) }
    }

    /// Reads the key at `path`. The passphrase is needed for a protected file and ignored otherwise.
    /// Refuses a file that group or others may access (fix with `chmod 600`), and a file whose key does
    /// not match the address it records.
    public static func load(from path: String, passphrase: [UInt8]?) throws(IdentityError) -> PrivateKey {
        try reportingPath(path) { () throws(IdentityError) in
            let file = try readKeyFile(at: path)
            var scalar = try file.secret(passphrase: passphrase)
            defer { Secrets.wipe(&scalar) }
            let key: PrivateKey
            do throws(IdentityError) {
                key = try PrivateKey(bytes: scalar)
            } catch {
                throw IdentityError(.badFormat, error.message)
            }
            guard key.address == file.address else {
                throw IdentityError(.badFormat, "the key does not match the address \(file.address) in the file")
            }
            return key
        }
    }

    /// Whether the key file at `path` is sealed under a passphrase. Applies the same checks as `load`
    /// except decryption.
    public static func isProtected(path: String) throws(IdentityError) -> Bool {
        try reportingPath(path) { () throws(IdentityError) in try readKeyFile(at: path).isProtected }
    }

    /// A passphrase kept in a file: its bytes without one trailing newline (`\n` or `\r\n`).
    /// Wipe the result when done.
    public static func readPassphrase(fromFile path: String) throws(IdentityError) -> [UInt8] {
        try reportingPath(path) { () throws(IdentityError) in
            var bytes = try readFile(at: path, ownerOnly: false)
            if bytes.last == UInt8(ascii: "\n") {
                bytes.removeLast()
                if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
            }
            guard !bytes.isEmpty else { throw IdentityError(.invalidInput, "the passphrase file is empty") }
            return bytes
        }
    }

    // MARK: - Files

    private static func readKeyFile(at path: String) throws(IdentityError) -> KeyFile {
        var text = try readFile(at: path, ownerOnly: true)
        defer { Secrets.wipe(&text) }
        return try KeyFile(decoding: text)
    }

    /// Runs `body`, putting `path` in front of the message of any error it throws.
    private static func reportingPath<R>(
        _ path: String, _ body: () throws(IdentityError) -> R
    ) throws(IdentityError) -> R {
        do {
            return try body()
        } catch {
            throw error.naming(path)
        }
    }

    private static func systemError(_ code: Int32) -> IdentityError {
        switch code {
        case ENOENT: IdentityError(.fileNotFound, "no such file")
        case EEXIST: IdentityError(.fileExists, "file exists; refusing to overwrite it")
        default: IdentityError(.system, String(cString: strerror(code)))
        }
    }

    /// The whole of a regular file of at most `maxFileSize` bytes. With `ownerOnly`, a file that group or
    /// others may access is refused, as OpenSSH refuses such private key files.
    private static func readFile(at path: String, ownerOnly: Bool) throws(IdentityError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw systemError(errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw systemError(errno) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw IdentityError(.badFormat, "not a regular file")
        }
        let permissions = info.st_mode & 0o777
        if ownerOnly, permissions & 0o077 != 0 {
            throw IdentityError(
                .insecurePermissions,
                "mode \(String(permissions, radix: 8)) lets group or others access the key; run chmod 600 \(path)")
        }
        guard info.st_size <= maxFileSize else {
            throw IdentityError(.badFormat, "too large for a key file (\(info.st_size) bytes)")
        }
        var bytes = [UInt8](repeating: 0, count: maxFileSize + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                Secrets.wipe(&bytes)
                throw systemError(code)
            }
            count += n
        }
        guard count <= maxFileSize else {
            Secrets.wipe(&bytes)
            throw IdentityError(.badFormat, "too large for a key file")
        }
        let contents = Array(bytes[..<count])
        Secrets.wipe(&bytes)
        return contents
    }

    /// Creates `text` at `path` with O_CREAT|O_EXCL and mode 0600, flushed to disk; on failure nothing is left.
    private static func writeNewFile(_ text: [UInt8], at path: String) throws(IdentityError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw systemError(errno) }
        var failure: Int32 = fchmod(fd, 0o600) == 0 ? 0 : errno
        var written = 0
        while failure == 0, written < text.count {
            let n = text.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n >= 0 {
                written += n
            } else if errno != EINTR {
                failure = errno
            }
        }
        if failure == 0, fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure != 0 {
            unlink(path)
            throw systemError(failure)
        }
    }

    /// Creates the missing directories above `path`, each with mode 0700.
    private static func createDirectories(parentOf path: String) throws(IdentityError) {
        guard let slash = path.lastIndex(of: "/") else { return }
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        var info = stat()
        if stat(parent, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else {
                throw IdentityError(.system, "\(parent): not a directory")
            }
            return
        }
        guard errno == ENOENT else { throw systemError(errno).naming(parent) }
        try createDirectories(parentOf: parent)
        guard mkdir(parent, 0o700) == 0 || errno == EEXIST else { throw systemError(errno).naming(parent) }
    }
}

extension IdentityError {
    /// The same error with `path: ` in front of the message.
    func naming(_ path: String) -> IdentityError {
        IdentityError(kind, "\(path): \(message)")
    }
}
