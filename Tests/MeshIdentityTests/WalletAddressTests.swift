import MeshIdentity
import Testing

@Suite struct WalletAddressTests {
    /// The examples in EIP-55, including its all-caps and all-lower-case ones.
    static let eip55Examples = [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ]

    @Test(arguments: eip55Examples)
    func checksumMatchesEIP55(_ text: String) throws {
        let address = try WalletAddress(parsing: text)
        #expect(address.checksummed == text)
        #expect(address.description == text)
    }

    @Test(arguments: eip55Examples)
    func singleCaseInputIsAccepted(_ text: String) throws {
        let digits = text.dropFirst(2)
        let lower = try WalletAddress(parsing: "0x" + digits.lowercased())
        let upper = try WalletAddress(parsing: "0x" + digits.uppercased())
        #expect(lower == upper)
        #expect(lower.checksummed == text)
    }

    @Test func wrongChecksumIsRejectedWithTheRightOne() {
        let error = #expect(throws: IdentityError.self) {
            try WalletAddress(parsing: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
        }
        #expect(error?.kind == .invalidInput)
        #expect(error?.message == "address 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD has a wrong EIP-55 checksum "
            + "(expected 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed)")
    }

    @Test(arguments: [
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
        "0x0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA",
        "",
    ])
    func malformedTextIsRejected(_ text: String) {
        let error = #expect(throws: IdentityError.self) { try WalletAddress(parsing: text) }
        #expect(error?.message.contains("is not 0x followed by 40 hex digits") == true)
    }

    @Test func bytesMustBeTwenty() {
        #expect(WalletAddress(bytes: [UInt8](repeating: 1, count: 19)) == nil)
        #expect(WalletAddress(bytes: [UInt8](repeating: 1, count: 20)) != nil)
    }

    @Test func orderIsByteOrder() throws {
        let low = try #require(WalletAddress(bytes: [0x00] + [UInt8](repeating: 0xff, count: 19)))
        let high = try #require(WalletAddress(bytes: [0x01] + [UInt8](repeating: 0x00, count: 19)))
        #expect(low < high)
        #expect([high, low].sorted() == [low, high])
    }
}
