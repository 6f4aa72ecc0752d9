-- foundry.crypto (runtime/crypto.c).
local crypto = require "foundry.crypto"

describe("crypto", function()
  it("computes SHA-256 (FIPS 180-2 vectors)", function()
    expect(crypto.sha256_hex("")):equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    expect(crypto.sha256_hex("abc")):equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    expect(#crypto.sha256("abc")):equals(32)
  end)

  it("computes HMAC-SHA256 (RFC 4231 cases 1 and 2)", function()
    expect(crypto.hex(crypto.hmac_sha256(string.rep("\x0b", 20), "Hi There")))
      :equals("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    expect(crypto.hex(crypto.hmac_sha256("Jefe", "what do ya want for nothing?")))
      :equals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
  end)

  it("makes random bytes and compares in constant time", function()
    local a, b = crypto.random_bytes(32), crypto.random_bytes(32)
    expect(#a):equals(32)
    expect(a == b):is(false)
    expect(crypto.random_bytes(0)):equals("")
    expect(#crypto.token()):equals(64)
    expect(crypto.equal(a, a)):is(true)
    expect(crypto.equal(a, b)):is(false)
    expect(crypto.equal("ab", "abc")):is(false)
    expect(function() crypto.random_bytes(-1) end):fails("expected 0 to")
  end)
end)
