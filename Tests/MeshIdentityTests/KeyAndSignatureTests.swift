import MeshIdentity
import MeshWire
import Testing

@Suite struct KeyAndSignatureTests {
    /// The account in the web3.js documentation for `web3.eth.accounts`.
    static let web3Key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"

    @Test func web3DocumentationAccount() throws {
        let key = try PrivateKey(hex: "0x" + Self.web3Key)
        #expect(key.address.checksummed == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23")
        #expect(key.bytes == hex(Self.web3Key))
    }

    @Test func privateKeyOneIsTheGenerator() throws {
        let key = try PrivateKey(bytes: [UInt8](repeating: 0, count: 31) + [1])
        #expect(key.address.checksummed == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
        #expect(key.publicKey.compressed == hex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"))
        #expect(key.publicKey.description == "0x0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    }

    @Test(arguments: [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364142",
        "0102",
    ])
    func invalidScalarsAreRejected(_ scalar: String) {
        let error = #expect(throws: IdentityError.self) { try PrivateKey(hex: scalar) }
        #expect(error?.kind == .invalidInput)
    }

    @Test func randomKeysAreValidAndDistinct() {
        let keys = (0..<8).map { _ in PrivateKey() }
        #expect(Set(keys.map(\.address)).count == keys.count)
        for key in keys {
            #expect((try? PrivateKey(bytes: key.bytes))?.address == key.address)
        }
    }

    @Test func publicKeyParsesBothEncodings() throws {
        let key = try PrivateKey(hex: Self.web3Key)
        let compressed = try #require(PublicKey(bytes: key.publicKey.compressed))
        let uncompressed = try #require(PublicKey(bytes: key.publicKey.uncompressed))
        #expect(compressed == key.publicKey)
        #expect(uncompressed == key.publicKey)
        #expect(key.publicKey.uncompressed.count == 65 && key.publicKey.uncompressed[0] == 0x04)
        #expect(PublicKey(bytes: [0x02] + [UInt8](repeating: 0xff, count: 32)) == nil)
        #expect(PublicKey(bytes: Array(key.publicKey.uncompressed.dropLast())) == nil)
    }

    @Test func personalSignMatchesWeb3() throws {
        let key = try PrivateKey(hex: Self.web3Key)
        let message = Array("Some data".utf8)
        #expect(PersonalSign.digest(message: message)
            == hex("1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"))
        let signature = key.personalSign(message: message)
        #expect(signature.description == "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd"
            + "6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c")
        #expect(PersonalSign.recover(message: message, signature: signature) == key.address)
        #expect(PersonalSign.verify(address: key.address, message: message, signature: signature))
        #expect(!PersonalSign.verify(address: key.address, message: Array("Some data!".utf8), signature: signature))
    }

    @Test func signAndRecoverRoundTrip() throws {
        for _ in 0..<16 {
            let key = PrivateKey()
            let digest = Keccak.hash256(key.address.bytes)
            let signature = key.sign(digest: digest)
            #expect(signature.bytes.count == 65)
            #expect(signature.bytes[64] == 27 || signature.bytes[64] == 28)
            #expect(signature.recoverPublicKey(digest: digest) == key.publicKey)
            #expect(signature.recoverAddress(digest: digest) == key.address)
            #expect(Signature(bytes: signature.bytes) == signature)
            #expect(signature.recoverAddress(digest: Keccak.hash256(digest)) != key.address)
            #expect(signature.recoverPublicKey(digest: Array(digest.dropLast())) == nil)
        }
    }

    @Test func keysSignAndRecoverConcurrently() async {
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    let key = PrivateKey()
                    let message = key.address.bytes
                    return PersonalSign.recover(message: message, signature: key.personalSign(message: message)) == key.address
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results == [Bool](repeating: true, count: 32))
    }

    @Test func signingIsDeterministic() throws {
        let key = try PrivateKey(hex: Self.web3Key)
        let digest = Keccak.hash256(Array("twice".utf8))
        #expect(key.sign(digest: digest) == key.sign(digest: digest))
    }

    @Test func recoveryIdZeroAndOneAreNormalised() throws {
        let signature = try PrivateKey(hex: Self.web3Key).personalSign(message: Array("Some data".utf8))
        var raw = signature.bytes
        raw[64] -= 27
        let normalised = try #require(Signature(bytes: raw))
        #expect(normalised == signature)
        #expect(normalised.bytes[64] == signature.bytes[64])
    }

    @Test func highSIsRejected() throws {
        let signature = try PrivateKey(hex: Self.web3Key).personalSign(message: Array("Some data".utf8))
        let order = hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
        var flipped = signature.bytes
        var borrow = 0
        for i in (0..<32).reversed() {
            let difference = Int(order[i]) - Int(signature.bytes[32 + i]) - borrow
            flipped[32 + i] = UInt8((difference + 256) % 256)
            borrow = difference < 0 ? 1 : 0
        }
        flipped[64] = signature.bytes[64] == 27 ? 28 : 27
        let error = #expect(throws: IdentityError.self) { try Signature(validating: flipped) }
        #expect(error?.message.contains("upper half") == true)
    }

    @Test(arguments: [
        ("00", "65 bytes"),
        (String(repeating: "11", count: 64) + "1d", "v is 29"),
        (String(repeating: "00", count: 32) + String(repeating: "11", count: 32) + "1b", "zero"),
        (String(repeating: "ff", count: 64) + "1b", "group order"),
    ])
    func malformedSignaturesAreRejected(_ text: String, reason: String) {
        let error = #expect(throws: IdentityError.self) { try Signature(parsing: text) }
        #expect(error?.message.contains(reason) == true)
        #expect(Signature(bytes: hex(text)) == nil)
    }

    @Test func signatureHexParsingAcceptsPrefixAndRejectsJunk() throws {
        let signature = try PrivateKey(hex: Self.web3Key).personalSign(message: [1, 2, 3])
        #expect(try Signature(parsing: signature.description) == signature)
        #expect(try Signature(parsing: Hex.encode(signature.bytes)) == signature)
        #expect(throws: IdentityError.self) { try Signature(parsing: "0xzz") }
    }
}
