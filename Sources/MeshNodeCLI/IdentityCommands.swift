import ArgumentParser
import Foundation
import MeshIdentity

/// `mesh-node identity …`: create, import, show and use wallet keys (format and behaviour in docs/identity.md).
///
/// Failures print one line, `error: …`, on stderr and exit with status 2; `verify` exits with 1 for a
/// signature that is well-formed but not by the given address.
struct IdentityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Create, import, show and use wallet keys.",
        subcommands: [New.self, Import.self, Show.self, Sign.self, Verify.self])

    /// The status for a failure that is not a usage error (ArgumentParser uses 64 for those).
    static let failureStatus = ExitCode(2)

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a random key in a new key file (mode 0600) and print its address.")

        @OptionGroup var output: OutputOptions

        func run() throws {
            try IdentityCommand.reportingFailures {
                try output.write(PrivateKey())
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Write an existing private key to a new key file (mode 0600) and print its address.",
            discussion: "The key is visible to other local users while the command runs (ps) and may stay in shell history.")

        @Option(help: ArgumentHelp("The 32-byte private key, 64 hex digits (0x optional).", valueName: "hex"))
        var privateKeyHex: String

        @OptionGroup var output: OutputOptions

        func run() throws {
            try IdentityCommand.reportingFailures {
                let key: PrivateKey
                do throws(IdentityError) {
                    key = try PrivateKey(hex: privateKeyHex)
                } catch {
                    throw Failure("--private-key-hex: \(error.message)")
                }
                try output.write(key)
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a key file's address and public key.")

        @OptionGroup var key: KeyOptions
        @Flag(help: "Print JSON: {\"address\", \"publicKey\", \"file\", \"protected\"}.") var json = false

        func run() throws {
            try IdentityCommand.reportingFailures {
                let privateKey = try key.load()
                let isProtected = try key.isProtected()
                if json {
                    try printJSON(KeyReport(key: privateKey, file: key.key, protected: isProtected))
                } else {
                    printTable([
                        ("address", privateKey.address.checksummed),
                        ("public key", privateKey.publicKey.description),
                        ("protection", isProtected ? "passphrase (argon2id)" : "none"),
                        ("file", key.key),
                    ])
                }
            }
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a text message as Ethereum personal_sign (EIP-191) does; print the 65-byte signature.",
            discussion: "The message is the UTF-8 text as given; unlike web3.js, 0x-hex text is not decoded to bytes.")

        @OptionGroup var key: KeyOptions
        @Option(help: ArgumentHelp("The message to sign.", valueName: "text")) var message: String

        func run() throws {
            try IdentityCommand.reportingFailures {
                print(try key.load().personalSign(message: Array(message.utf8)))
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a personal_sign (EIP-191) signature: prints \"valid\" (exit 0) or \"invalid: …\" (exit 1).")

        @Option(help: ArgumentHelp("The expected signer, 0x and 40 hex digits (EIP-55 checked when mixed case).",
                                   valueName: "0x…"))
        var address: String
        @Option(help: ArgumentHelp("The signed message.", valueName: "text")) var message: String
        @Option(help: ArgumentHelp("The 65-byte signature in hex (r, s, v).", valueName: "hex")) var signature: String

        func run() throws {
            let valid = try IdentityCommand.reportingFailures {
                let expected: WalletAddress
                let parsed: Signature
                do throws(IdentityError) {
                    expected = try WalletAddress(parsing: address)
                } catch {
                    throw Failure("--address: \(error.message)")
                }
                do throws(IdentityError) {
                    parsed = try Signature(parsing: signature)
                } catch {
                    throw Failure("--signature: \(error.message)")
                }
                guard let signer = PersonalSign.recover(message: Array(message.utf8), signature: parsed) else {
                    print("invalid: the signature recovers to no key")
                    return false
                }
                guard signer == expected else {
                    print("invalid: signed by \(signer)")
                    return false
                }
                print("valid")
                return true
            }
            if !valid { throw ExitCode(1) }
        }
    }
}

// MARK: - Shared options

extension IdentityCommand {
    struct PassphraseOptions: ParsableArguments {
        @Option(help: ArgumentHelp("File holding the passphrase; one trailing newline is ignored.", valueName: "file"))
        var passphraseFile: String?

        /// Runs `body` with the passphrase (nil without `--passphrase-file`), wiped afterwards.
        func withPassphrase<R>(_ body: ([UInt8]?) throws -> R) throws -> R {
            guard let passphraseFile else { return try body(nil) }
            var passphrase: [UInt8]
            do throws(IdentityError) {
                passphrase = try KeyStore.readPassphrase(fromFile: passphraseFile)
            } catch {
                throw Failure("--passphrase-file \(error.message)")
            }
            defer { Secrets.wipe(&passphrase) }
            return try body(passphrase)
        }
    }

    /// `--key FILE` and its passphrase, for commands that use an existing key.
    struct KeyOptions: ParsableArguments {
        @Option(help: ArgumentHelp("The key file.", valueName: "file")) var key: String
        @OptionGroup var passphrase: PassphraseOptions

        func load() throws -> PrivateKey {
            try passphrase.withPassphrase { secret in
                do throws(IdentityError) {
                    return try KeyStore.load(from: key, passphrase: secret)
                } catch where error.kind == .passphraseRequired {
                    throw Failure("--key \(key): the key is passphrase-protected; give --passphrase-file")
                } catch {
                    throw Failure("--key \(error.message)")
                }
            }
        }

        func isProtected() throws -> Bool {
            do throws(IdentityError) {
                return try KeyStore.isProtected(path: key)
            } catch {
                throw Failure("--key \(error.message)")
            }
        }
    }

    /// `--out FILE`, its passphrase and `--json`, for commands that create a key file.
    struct OutputOptions: ParsableArguments {
        @Option(help: ArgumentHelp("The key file to create; an existing file is never overwritten.", valueName: "file"))
        var out: String
        @OptionGroup var passphrase: PassphraseOptions
        @Flag(help: "Print JSON: {\"address\", \"publicKey\", \"file\", \"protected\"}.") var json = false

        /// Writes `key` to `--out` and prints what was written.
        func write(_ key: PrivateKey) throws {
            try passphrase.withPassphrase { secret in
                do throws(IdentityError) {
                    try KeyStore.create(key, at: out, passphrase: secret)
                } catch {
                    throw Failure("--out \(error.message)")
                }
            }
            if json {
                try printJSON(KeyReport(key: key, file: out, protected: passphrase.passphraseFile != nil))
            } else {
                print(key.address)
            }
        }
    }
}

// MARK: - Output and failures

extension IdentityCommand {
    /// A one-line message for the user.
    struct Failure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    /// What `new`, `import` and `show --json` print.
    struct KeyReport: Encodable {
        let address: String
        let publicKey: String
        let file: String
        let protected: Bool

        init(key: PrivateKey, file: String, protected: Bool) {
            address = key.address.checksummed
            publicKey = key.publicKey.description
            self.file = file
            self.protected = protected
        }
    }

    /// Runs `body`; any failure becomes `error: <message>` on stderr and exit status 2.
    @discardableResult
    static func reportingFailures<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let failure as Failure {
            FileHandle.standardError.write(Data("error: \(failure.message)\n".utf8))
            throw failureStatus
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw failureStatus
        }
    }

    static func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Label/value lines with the values aligned.
    static func printTable(_ rows: [(String, String)]) {
        let width = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            print(label.padding(toLength: width + 2, withPad: " ", startingAt: 0) + value)
        }
    }
}
