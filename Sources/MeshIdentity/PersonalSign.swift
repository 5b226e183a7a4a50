/// EIP-191 "personal_sign" messages, so a user can sign with an existing Ethereum wallet.
public enum PersonalSign {
    /// Keccak-256("\u{19}Ethereum Signed Message:\n" + decimal byte length of `message` + `message`).
    public static func digest(message: [UInt8]) -> [UInt8] {
        Keccak.hash256(Array("\u{19}Ethereum Signed Message:\n\(message.count)".utf8) + message)
    }

    /// The address that signed `message`, or nil when the signature recovers to no key.
    public static func recover(message: [UInt8], signature: Signature) -> WalletAddress? {
        signature.recoverAddress(digest: digest(message: message))
    }

    /// True when `signature` over `message` was made by the key of `address`.
    public static func verify(address: WalletAddress, message: [UInt8], signature: Signature) -> Bool {
        recover(message: message, signature: signature) == address
    }
}
