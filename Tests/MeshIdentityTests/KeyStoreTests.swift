import Foundation
import MeshIdentity
import MeshWire
import Testing

@Suite struct KeyStoreTests {
    static let passphrase = Array("correct horse battery staple".utf8)

    @Test func plainFileRoundTrip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("node.key")
        let key = PrivateKey()
        try KeyStore.create(key, at: path, passphrase: nil)
        #expect(try permissions(path) == 0o600)
        #expect(try KeyStore.isProtected(path: path) == false)
        let loaded = try KeyStore.load(from: path, passphrase: nil)
        #expect(loaded.address == key.address)
        #expect(loaded.bytes == key.bytes)
        #expect(try KeyStore.load(from: path, passphrase: Self.passphrase).address == key.address)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("\"address\": \"\(key.address.checksummed)\""))
        #expect(text.contains("\"kdf\": \"none\""))
    }

    @Test func protectedFileRoundTrip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("wallet.key")
        let key = PrivateKey()
        try KeyStore.create(key, at: path, passphrase: Self.passphrase)
        #expect(try permissions(path) == 0o600)
        #expect(try KeyStore.isProtected(path: path))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains(Hex.encode(key.bytes)))
        #expect(try KeyStore.load(from: path, passphrase: Self.passphrase).address == key.address)

        let missing = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: nil) }
        #expect(missing?.kind == .passphraseRequired)
        let wrong = #expect(throws: IdentityError.self) {
            try KeyStore.load(from: path, passphrase: Array("Correct horse battery staple".utf8))
        }
        #expect(wrong?.kind == .wrongPassphrase)
        #expect(wrong?.message == "\(path): wrong passphrase (or the file was altered)")
    }

    @Test func addressIsBoundToTheSealedSecret() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("wallet.key")
        let key = PrivateKey()
        try KeyStore.create(key, at: path, passphrase: Self.passphrase)
        let other = PrivateKey().address.checksummed
        let text = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: key.address.checksummed, with: other)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        let error = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: Self.passphrase) }
        #expect(error?.kind == .wrongPassphrase)
    }

    @Test func plainFileWithForeignAddressIsRejected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("node.key")
        let key = PrivateKey()
        try KeyStore.create(key, at: path, passphrase: nil)
        let text = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: key.address.checksummed, with: PrivateKey().address.checksummed)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        let error = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: nil) }
        #expect(error?.kind == .badFormat)
        #expect(error?.message.contains("does not match the address") == true)
    }

    @Test func existingFileIsNeverOverwritten() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("node.key")
        let first = PrivateKey()
        try KeyStore.create(first, at: path, passphrase: nil)
        let error = #expect(throws: IdentityError.self) { try KeyStore.create(PrivateKey(), at: path, passphrase: nil) }
        #expect(error?.kind == .fileExists)
        #expect(error?.message == "\(path): file exists; refusing to overwrite it")
        #expect(try KeyStore.load(from: path, passphrase: nil).address == first.address)
    }

    @Test func missingDirectoriesAreCreatedPrivate() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("a/b/node.key")
        try KeyStore.create(PrivateKey(), at: path, passphrase: nil)
        #expect(try permissions(directory.file("a")) == 0o700)
        #expect(try permissions(directory.file("a/b")) == 0o700)
        #expect(try permissions(path) == 0o600)
    }

    @Test func fileOpenToOthersIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("node.key")
        try KeyStore.create(PrivateKey(), at: path, passphrase: nil)
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: path)
        let error = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: nil) }
        #expect(error?.kind == .insecurePermissions)
        #expect(error?.message == "\(path): mode 640 lets group or others access the key; run chmod 600 \(path)")
    }

    @Test func missingFileIsReported() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("absent.key")
        let error = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: nil) }
        #expect(error?.kind == .fileNotFound)
        #expect(error?.message == "\(path): no such file")
    }

    @Test(arguments: [
        "not json",
        #"{"version": 2, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "kdf": "none", "secret": ""}"#,
        #"{"version": 1, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "kdf": "scrypt", "secret": ""}"#,
        #"{"version": 1, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "kdf": "none", "secret": "01"}"#,
        #"{"version": 1, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "kdf": "argon2id", "secret": "01"}"#,
        #"{"version": 1, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395BDF", "kdf": "none", "secret": "01"}"#,
    ])
    func malformedFilesAreRejected(_ text: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.key")
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]))
        let error = #expect(throws: IdentityError.self) { try KeyStore.load(from: path, passphrase: nil) }
        #expect(error?.kind == .badFormat)
        #expect(error?.message.hasPrefix("\(path): ") == true)
    }

    @Test func plainKeyFileWrittenByHandLoads() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("one.key")
        let text = #"{"version": 1, "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "kdf": "none", "#
            + #""secret": "0000000000000000000000000000000000000000000000000000000000000001"}"#
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]))
        #expect(try KeyStore.load(from: path, passphrase: nil).address.checksummed == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
    }

    @Test func passphraseFileLosesOneTrailingNewline() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cases: [(String, [UInt8]?)] = [
            ("secret\n", Array("secret".utf8)),
            ("secret\r\n", Array("secret".utf8)),
            ("secret\n\n", Array("secret\n".utf8)),
            ("secret", Array("secret".utf8)),
            ("\n", nil),
        ]
        for (index, (contents, expected)) in cases.enumerated() {
            let path = directory.file("pass\(index)")
            #expect(FileManager.default.createFile(atPath: path, contents: Data(contents.utf8)))
            if let expected {
                #expect(try KeyStore.readPassphrase(fromFile: path) == expected)
            } else {
                let error = #expect(throws: IdentityError.self) { try KeyStore.readPassphrase(fromFile: path) }
                #expect(error?.message == "\(path): the passphrase file is empty")
            }
        }
    }

    @Test func emptyPassphraseIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("node.key")
        let error = #expect(throws: IdentityError.self) { try KeyStore.create(PrivateKey(), at: path, passphrase: []) }
        #expect(error?.kind == .invalidInput)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
