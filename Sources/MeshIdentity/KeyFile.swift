import CSodium
import FoundationEssentials
import MeshWire

/// The contents of a key file (format version 1, described in docs/identity.md), and the passphrase
/// sealing of its secret: Argon2id (libsodium `crypto_pwhash`) derives a 32-byte key that seals the
/// scalar with XChaCha20-Poly1305, the 20 address bytes as associated data.
struct KeyFile {
    static let version = 1

    /// Argon2id cost for new files: 3 passes over 128 MiB, about 0.25 s on a current x86-64 core.
    static let newOps: UInt64 = 3
    static let newMem: UInt64 = 128 << 20
    /// Upper bounds accepted when loading, so a crafted file cannot demand minutes or gigabytes.
    static let maxOps: UInt64 = 16
    static let maxMem: UInt64 = 1 << 30

    static let saltBytes = Int(crypto_pwhash_saltbytes())
    static let nonceBytes = Int(crypto_aead_xchacha20poly1305_ietf_npubbytes())
    static let tagBytes = Int(crypto_aead_xchacha20poly1305_ietf_abytes())
    static let scalarBytes = 32

    enum Protection {
        /// The scalar in the clear.
        case none(secret: [UInt8])
        /// The scalar sealed under a passphrase; `sealed` is ciphertext || 16-byte tag.
        case argon2id(ops: UInt64, mem: UInt64, salt: [UInt8], nonce: [UInt8], sealed: [UInt8])
    }

    let address: WalletAddress
    let protection: Protection

    /// The file for `key`, sealed under `passphrase` when one is given.
    init(key: PrivateKey, passphrase: [UInt8]?) throws(IdentityError) {
        address = key.address
        var scalar = key.bytes
        defer { Secrets.wipe(&scalar) }
        guard let passphrase else {
            protection = .none(secret: scalar)
            return
        }
        let salt = Crypto.randomBytes(Self.saltBytes)
        let nonce = Crypto.randomBytes(Self.nonceBytes)
        var sealingKey = try Self.deriveKey(passphrase: passphrase, salt: salt, ops: Self.newOps, mem: Self.newMem)
        defer { Secrets.wipe(&sealingKey) }
        var sealed = [UInt8](repeating: 0, count: scalar.count + Self.tagBytes)
        var sealedLength: UInt64 = 0
        crypto_aead_xchacha20poly1305_ietf_encrypt(
            &sealed, &sealedLength, scalar, UInt64(scalar.count), address.bytes, UInt64(address.bytes.count),
            nil, nonce, sealingKey)
        protection = .argon2id(ops: Self.newOps, mem: Self.newMem, salt: salt, nonce: nonce, sealed: sealed)
    }

    var isProtected: Bool {
        if case .argon2id = protection { true } else { false }
    }

    /// The 32-byte scalar; wipe it when done. The passphrase is ignored for an unprotected file.
    func secret(passphrase: [UInt8]?) throws(IdentityError) -> [UInt8] {
        switch protection {
        case .none(let secret):
            return secret
        case .argon2id(let ops, let mem, let salt, let nonce, let sealed):
            guard let passphrase else {
                throw IdentityError(.passphraseRequired, "the key is passphrase-protected and no passphrase was given")
            }
            var sealingKey = try Self.deriveKey(passphrase: passphrase, salt: salt, ops: ops, mem: mem)
            defer { Secrets.wipe(&sealingKey) }
            var scalar = [UInt8](repeating: 0, count: Self.scalarBytes)
            var scalarLength: UInt64 = 0
            guard crypto_aead_xchacha20poly1305_ietf_decrypt(
                &scalar, &scalarLength, nil, sealed, UInt64(sealed.count), address.bytes,
                UInt64(address.bytes.count), nonce, sealingKey) == 0
            else { throw IdentityError(.wrongPassphrase, "wrong passphrase (or the file was altered)") }
            return scalar
        }
    }

    private static func deriveKey(
        passphrase: [UInt8], salt: [UInt8], ops: UInt64, mem: UInt64
    ) throws(IdentityError) -> [UInt8] {
        guard !passphrase.isEmpty else { throw IdentityError(.invalidInput, "the passphrase is empty") }
        Crypto.requireSodium()
        var key = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_keybytes()))
        let status = passphrase.withUnsafeBytes { raw in
            crypto_pwhash(
                &key, UInt64(key.count), raw.bindMemory(to: CChar.self).baseAddress!, UInt64(raw.count), salt,
                ops, Int(mem), crypto_pwhash_alg_argon2id13())
        }
        guard status == 0 else {
            throw IdentityError(.system, "Argon2id needs \(mem >> 20) MiB of memory and could not get it")
        }
        return key
    }

    // MARK: - Text form

    /// The JSON text, one field per line in a fixed order. Wipe it when done: it may hold the scalar.
    func encoded() -> [UInt8] {
        var fields = [("version", "\(Self.version)"), ("address", quoted(address.checksummed))]
        switch protection {
        case .none(let secret):
            fields += [("kdf", quoted("none")), ("secret", quoted(Hex.encode(secret)))]
        case .argon2id(let ops, let mem, let salt, let nonce, let sealed):
            fields += [
                ("kdf", quoted("argon2id")), ("ops", "\(ops)"), ("mem", "\(mem)"), ("salt", quoted(Hex.encode(salt))),
                ("nonce", quoted(Hex.encode(nonce))), ("secret", quoted(Hex.encode(sealed))),
            ]
        }
        let body = fields.map { "  \(quoted($0.0)): \($0.1)" }.joined(separator: ",\n")
        return Array("{\n\(body)\n}\n".utf8)
    }

    private func quoted(_ text: String) -> String { "\"\(text)\"" }

    /// The fields as JSON carries them, before any checks.
    private struct Fields: Decodable {
        var version: Int
        var address: String
        var kdf: String
        var ops: UInt64?
        var mem: UInt64?
        var salt: String?
        var nonce: String?
        var secret: String
    }

    /// Parses and checks a file's text; nothing is decrypted.
    init(decoding text: [UInt8]) throws(IdentityError) {
        let fields: Fields
        do {
            fields = try JSONDecoder().decode(Fields.self, from: Data(text))
        } catch {
            throw IdentityError(.badFormat, "not a key file (expected a JSON object with version, address, kdf, secret)")
        }
        guard fields.version == Self.version else {
            throw IdentityError(.badFormat, "key file version \(fields.version) is not supported (expected \(Self.version))")
        }
        do throws(IdentityError) {
            address = try WalletAddress(parsing: fields.address)
        } catch {
            throw IdentityError(.badFormat, error.message)
        }
        switch fields.kdf {
        case "none":
            protection = .none(secret: try Self.hexField("secret", fields.secret, count: Self.scalarBytes))
        case "argon2id":
            guard let ops = fields.ops, let mem = fields.mem, let salt = fields.salt, let nonce = fields.nonce else {
                throw IdentityError(.badFormat, "kdf argon2id needs ops, mem, salt and nonce")
            }
            guard (UInt64(crypto_pwhash_opslimit_min())...Self.maxOps).contains(ops),
                  (UInt64(crypto_pwhash_memlimit_min())...Self.maxMem).contains(mem)
            else {
                throw IdentityError(.badFormat, "Argon2id cost ops \(ops), mem \(mem) is outside the accepted range")
            }
            protection = .argon2id(
                ops: ops, mem: mem,
                salt: try Self.hexField("salt", salt, count: Self.saltBytes),
                nonce: try Self.hexField("nonce", nonce, count: Self.nonceBytes),
                sealed: try Self.hexField("secret", fields.secret, count: Self.scalarBytes + Self.tagBytes))
        default:
            throw IdentityError(.badFormat, "unknown kdf \(fields.kdf.debugDescription) (expected \"none\" or \"argon2id\")")
        }
    }

    private static func hexField(_ name: String, _ text: String, count: Int) throws(IdentityError) -> [UInt8] {
        guard let bytes = Hex.decode(text), bytes.count == count else {
            throw IdentityError(.badFormat, "\(name) is not \(count) bytes of hex")
        }
        return bytes
    }
}
