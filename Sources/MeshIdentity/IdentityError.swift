/// A failure in the identity layer: a one-line message for people, and a kind for code that must react.
public struct IdentityError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, in broad strokes.
    public enum Kind: Sendable, Equatable {
        /// Malformed text or bytes: hex, lengths, checksums, out-of-range scalars.
        case invalidInput
        /// The key file does not exist.
        case fileNotFound
        /// The key file to create exists already; key files are never overwritten.
        case fileExists
        /// The file is readable or writable by group or others.
        case insecurePermissions
        /// The file is not a key file this version understands.
        case badFormat
        /// The key file is passphrase-protected and no passphrase was given.
        case passphraseRequired
        /// Decryption failed: wrong passphrase, or the file was altered.
        case wrongPassphrase
        /// Any other system error (permissions, I/O, memory).
        case system
    }

    public let kind: Kind
    /// One line, no trailing period; key store messages start with the file's path.
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
