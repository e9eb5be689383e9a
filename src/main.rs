fn main() {
    println!("lmpi");
}
